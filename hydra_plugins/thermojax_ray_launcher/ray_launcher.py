"""The ``hydra/launcher=thermojax_ray`` plugin: registers its config and defines the Launcher class.

The config, :class:`ThermojaxRayLauncherConf`, lives in :mod:`._conf` (a leaf that every module of
the plugin can import) and is re-exported here. Hydra imports every public module under
``hydra_plugins`` at start-up, so this one stays light: Ray and thermojax are imported only when a
multirun actually launches (in ``_core``, which gets the settings and Hydra's objects as arguments,
not this launcher).
"""

from collections.abc import Sequence

from hydra.core.config_store import ConfigStore
from hydra.core.utils import JobReturn
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

from hydra_plugins.thermojax_ray_launcher._conf import ThermojaxRayLauncherConf

__all__ = ["ThermojaxRayLauncher", "ThermojaxRayLauncherConf"]


ConfigStore.instance().store(
    group="hydra/launcher",
    name="thermojax_ray",
    node=ThermojaxRayLauncherConf,
    provider="thermojax",
)


class ThermojaxRayLauncher(Launcher):
    """Runs each job of a Hydra multirun as a Ray task; see ``ThermojaxRayLauncherConf``."""

    def __init__(self, **settings: object) -> None:
        self.settings = ThermojaxRayLauncherConf(**settings)  # type: ignore[arg-type]
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.task_function: TaskFunction | None = None

    def setup(
        self,
        *,
        hydra_context: HydraContext,
        task_function: TaskFunction,
        config: DictConfig,
    ) -> None:
        from hydra_plugins.thermojax_ray_launcher import _core

        self.config = config
        self.hydra_context = hydra_context
        self.task_function = task_function
        # The sweeper composes each job to validate the batch right after this; keep those.
        _core.compose_each_job_once(hydra_context.config_loader)

    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn]:
        from hydra_plugins.thermojax_ray_launcher import _core

        assert self.config is not None and self.hydra_context is not None, "setup() not called"
        assert self.task_function is not None
        return _core.launch(
            self.settings,
            config=self.config,
            hydra_context=self.hydra_context,
            task_function=self.task_function,
            job_overrides=job_overrides,
            initial_job_idx=initial_job_idx,
        )
