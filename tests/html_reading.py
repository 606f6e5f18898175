"""Read an HTML report the way a person reads it: the text of a card, a badge, a table row.

A small element tree from the standard library's parser, so that a test can find a run's values
where the page shows them (the value under a card's label, the band in the hero badge, the cells
of a table row) instead of anywhere in the page, where a static word of the template would do.
"""

from __future__ import annotations

import dataclasses
import re
from html.parser import HTMLParser

CHECK_MARKS = {True: "\u2713", False: "\u2717"}
"""How the report marks a met and an unmet criterion of the interpretation band."""
VOID = {"meta", "br", "img", "input", "link", "hr", "area", "base", "col", "source", "wbr"}


@dataclasses.dataclass
class Element:
    tag: str
    attrs: dict[str, str]
    children: list[Element | str] = dataclasses.field(default_factory=list)

    @property
    def classes(self) -> set[str]:
        return set(self.attrs.get("class", "").split())

    def text(self) -> str:
        """The element's text with runs of whitespace collapsed, as a browser shows it."""
        parts = [c if isinstance(c, str) else c.text() for c in self.children]
        return re.sub(r"\s+", " ", " ".join(parts)).strip()

    def iter(self):
        yield self
        for child in self.children:
            if isinstance(child, Element):
                yield from child.iter()

    def find_all(self, tag: str | None = None, cls: str | None = None) -> list[Element]:
        return [
            e
            for e in self.iter()
            if (tag is None or e.tag == tag) and (cls is None or cls in e.classes)
        ]

    def find(self, tag: str | None = None, cls: str | None = None) -> Element:
        found = self.find_all(tag, cls)
        assert found, f"no <{tag or '*'} class={cls!r}> in the page"
        return found[0]


class _TreeBuilder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Element("#document", {})
        self.stack = [self.root]

    def handle_starttag(self, tag, attrs):
        element = Element(tag, {k: v or "" for k, v in attrs})
        self.stack[-1].children.append(element)
        if tag not in VOID:
            self.stack.append(element)

    def handle_startendtag(self, tag, attrs):
        self.stack[-1].children.append(Element(tag, {k: v or "" for k, v in attrs}))

    def handle_endtag(self, tag):
        for depth in range(len(self.stack) - 1, 0, -1):
            if self.stack[depth].tag == tag:
                del self.stack[depth:]
                return

    def handle_data(self, data):
        self.stack[-1].children.append(data)


def parse(html: str) -> Element:
    builder = _TreeBuilder()
    builder.feed(html)
    builder.close()
    return builder.root


def cards(root: Element) -> dict[str, dict[str, str]]:
    """Every card's label -> its ``value`` and ``note`` texts (the first card of a label wins)."""
    out: dict[str, dict[str, str]] = {}
    for card in root.find_all("div", "card"):
        parts = {
            name: (found[0].text() if (found := card.find_all(cls=name)) else "")
            for name in ("label", "value", "note")
        }
        out.setdefault(parts["label"], parts)
    return out


def section(root: Element, heading: str) -> list[Element]:
    """The elements after the ``<h2>`` whose text is ``heading``, up to the next ``<h2>``."""
    body = root.find("main")
    children = [c for c in body.children if isinstance(c, Element)]
    start = next(i for i, c in enumerate(children) if c.tag == "h2" and c.text() == heading)
    end = next(
        (i for i, c in enumerate(children[start + 1 :], start + 1) if c.tag == "h2"), len(children)
    )
    return children[start + 1 : end]


def table_rows(table: Element) -> list[list[str]]:
    """The cell texts of each row that has ``<td>`` cells (header rows left out)."""
    rows = []
    for tr in table.find_all("tr"):
        cells = [c.text() for c in tr.children if isinstance(c, Element) and c.tag == "td"]
        if cells:
            rows.append(cells)
    return rows


def table_after(root: Element, heading: str) -> Element:
    """The first table in the section under ``heading``."""
    for element in section(root, heading):
        tables = element.find_all("table")
        if tables:
            return tables[0]
    raise AssertionError(f"no table under {heading!r}")


def num(value, digits: int = 3) -> str:
    """A JSON number as the report prints it (``n/a`` for null)."""
    return "n/a" if value is None else f"{value:.{digits}f}"


def pct(value, digits: int = 1) -> str:
    return "n/a" if value is None else f"{100 * value:.{digits}f}%"


def check_report_shows_the_run(html: str, data: dict, band_colors: dict[str, str]) -> None:
    """Every figure of a diffusion run's ``baseline_metrics.json`` ``data`` where the HTML report
    shows it: title, hero score, verdict and smoothness band, cards, the boundary, layer and
    violation tables, the interpretation, the quality cards and the extra quality figures."""
    root = parse(html)
    name, band = data["model_name"], data["interpretation"]["band"]
    verdict = data["interpretation"].get("verdict")
    title = root.find("title").text()
    assert name in title and f"INT{data['bit_width']}" in title, title
    assert f"{data['num_time_groups']} time groups" in title, title
    kind = "Enhanced" if data.get("enhancement") else "Baseline"
    assert root.find("h1").text() == f"{kind} Markov smoothness: {name}"

    hero = root.find("section", "hero")
    quality = data.get("quality") or {}
    frechet = quality.get("frechet_fp32"), quality.get("frechet_quantized")
    if None in frechet:  # no graded ratio: the smoothness score leads
        assert hero.find(cls="score").text() == num(data["smoothness_score"], 3)
        assert not hero.find_all(cls="smoothness-score")
    else:  # the graded quality figure leads, the smoothness score beside it
        r = frechet[1] / frechet[0]
        assert hero.find(cls="score").text() == (f"{r:.3g}x" if r >= 10 else f"{r:.2f}x")
        assert hero.find(cls="muted").text() == "Frechet / fp32"
        assert hero.find(cls="smoothness-score").text() == num(data["smoothness_score"], 3)
        assert hero.find(cls="secondary").text().endswith(" smoothness score")
    smoothness = hero.find("span", "smoothness")
    assert smoothness.text() == f"smoothness band: {band}"
    assert f"background: {band_colors[band]}" in smoothness.attrs["style"]
    if verdict is None:
        assert not hero.find_all("span", "verdict")
    else:
        assert hero.find("span", "verdict").text() == f"quality band: {verdict}"
        assert f"--band: {band_colors[verdict]}" in hero.attrs["style"]
    assert hero.find("p").text() == re.sub(r"\s+", " ", data["interpretation"]["summary"])

    shown = cards(root)
    num_layers, num_groups = len(data["layers"]), data["num_time_groups"]
    quality = data["quality"]
    expected = {
        "Violations": (
            str(data["violation_count"]),
            (
                f"of {num_layers * (num_groups - 1)} layer-boundaries, scale jump > "
                f"{data['smoothness_threshold']}"
            ),
        ),
        "Boundary score min / max": (
            f"{num(data['min_boundary_score'], 2)} / {num(data['max_boundary_score'], 2)}",
            f"mean {num(data['mean_boundary_score'])}, std {num(data['std_boundary_score'])}",
        ),
        "Weight cosine similarity": (num(data["cosine_similarity"], 4), "all quantized weights"),
        "Compression ratio": (f"{num(data['compression_ratio'], 2)}x", None),
        "Model size": (f"{num(data['model_size_mb'], 4)} MB", None),
        "Trajectory drift": (num(quality["drift_mean"], 4), "mean over timesteps"),
        "Frechet distance": (
            num(quality["frechet_quantized"], 2),
            f"quantized; fp32 {num(quality['frechet_fp32'], 2)}",
        ),
        "Final-sample MSE": (num(quality["final_mse"], 3), "pixel units (0..16)"),
        "Frechet fp32 / quantized": (
            f"{num(quality['frechet_fp32'], 2)} / {num(quality['frechet_quantized'], 2)}",
            None,
        ),
        "Class coverage fp32 / quantized": (
            (
                f"{pct(quality['class_coverage_fp32'], 0)} / "
                f"{pct(quality['class_coverage_quantized'], 0)}"
            ),
            None,
        ),
        "Drift per group": (", ".join(f"{d:.3g}" for d in quality["drift_per_group"]), None),
    }
    for label, (value, note) in expected.items():
        assert shown[label]["value"] == value, (label, shown[label], value)
        if note is not None:
            assert shown[label]["note"] == note, (label, shown[label], note)

    analysis = data["violation_analysis"]
    boundaries = table_rows(table_after(root, "Boundaries"))
    want_boundaries = [
        [
            f"b{i} (g{i} \u2192 g{i + 1})",
            str(data["time_groups"][i][1]),
            num(score),
            str(analysis["violations_per_boundary"][i]),
        ]
        for i, score in enumerate(data["boundary_scores"])
    ]
    assert boundaries == want_boundaries
    layers = table_rows(table_after(root, "Layers"))
    want_layers = []
    for layer in data["layers"]:
        row = [
            layer["name"],
            num(layer["smoothness_score"]),
            num(layer["cosine_similarity"], 4),
            str(analysis["violations_per_layer"][layer["name"]]),
        ]
        if len(layer["scales"]) <= 12:
            row += [
                ", ".join(f"{s:.4g}" for s in layer["scales"]),
                ", ".join(f"{z:.0f}" for z in layer["zero_points"]),
            ]
        else:
            row += [
                (
                    f"{min(layer['scales']):.4g} .. {max(layer['scales']):.4g} "
                    f"({len(layer['scales'])} groups)"
                ),
                f"{min(layer['zero_points']):.0f} .. {max(layer['zero_points']):.0f}",
            ]
        want_layers.append(row)
    assert layers == want_layers
    if data["violations"]:
        rows = table_rows(table_after(root, "Violations"))
        assert rows == [
            [
                v["layer"],
                f"b{v['boundary_idx']}",
                str(data["time_groups"][v["boundary_idx"]][1]),
                pct(v["scale_jump"]),
                num(v["zero_point_jump"], 4),
                v["severity"],
            ]
            for v in data["violations"]
        ]
    headings = [h.text() for h in root.find_all("h3")]
    assert f"Smoothness band: {band}" in headings, headings
    interpretation = data["interpretation"]
    for cls, key in (("smoothness-checks", "checks"), ("quality-checks", "quality_checks")):
        shown = root.find_all("ul", cls)
        checks = [li.text() for ul in shown for li in ul.find_all("li")]
        assert checks == [
            f"{CHECK_MARKS[c['met']]} {c['criterion']}: {c['value']}"
            for c in interpretation.get(key, [])
        ], cls
    quality_band = interpretation.get("quality_band")
    assert (f"Quality band: {quality_band} (the verdict)" in headings) is (quality_band is not None)
    named = {
        "drift_per_timestep",
        "drift_per_group",
        "drift_mean",
        "final_mse",
        "frechet_fp32",
        "frechet_quantized",
        "class_coverage_fp32",
        "class_coverage_quantized",
    }
    extra = sorted(
        (k, v)
        for k, v in quality.items()
        if k not in named and isinstance(v, int | float) and not isinstance(v, bool)
    )
    if extra:
        quality_part = section(root, "Quality of quantized sampling")
        tables = [t for e in quality_part for t in e.find_all("table")]
        rows = table_rows(tables[-1])
        assert rows == [[k, str(v) if isinstance(v, int) else num(v, 4)] for k, v in extra]
