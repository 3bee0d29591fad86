"""The README stays the front door and the reference lives in docs/: every setting is
documented exactly once, every emitted name is documented, and CI runs the README's own
test command."""

from __future__ import annotations

import re
from pathlib import Path

from reasonflow_otel import semconv
from reasonflow_otel.settings import setting_docs

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
DOCS = {path.name: path.read_text(encoding="utf-8") for path in (ROOT / "docs").glob("*.md")}


def _quickstart_commands() -> list[str]:
    quickstart = README.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sh\n(.+?)\n```", quickstart)


def _emitted_names(prefix: str) -> list[str]:
    return [
        value
        for name, value in vars(semconv).items()
        if name.startswith(prefix) and isinstance(value, str)
    ]


def test_quickstart_is_exactly_two_commands() -> None:
    commands = _quickstart_commands()
    assert len(commands) == 2
    assert all("\n" not in command for command in commands)
    install_and_run, test = commands
    assert "opentelemetry-instrument" in install_and_run
    assert "examples/" in install_and_run
    assert "pytest" in test


def test_the_quickstart_installs_what_the_example_imports() -> None:
    """pip only warns about an extra that does not exist: the example would then fail."""
    install = _quickstart_commands()[0].split("pip install ", 1)[1].split(" && ", 1)[0]
    assert "pocketflow" in install.split()
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    for extras in re.findall(r"\[([\w,-]+)\]", install):
        for extra in extras.split(","):
            assert re.search(rf"^{extra} = \[", pyproject, flags=re.MULTILINE), extra


def test_ci_runs_the_readme_test_command_verbatim() -> None:
    ci_lines = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert _quickstart_commands()[1] in ci_lines


def test_readme_stays_short() -> None:
    assert len(README.splitlines()) < 300


def test_every_setting_is_documented_exactly_once_in_docs() -> None:
    """One table row per setting, across all pages: each topic in one place."""
    rows = {
        name: sum(
            len(re.findall(rf"^\| `{name}` \|", text, flags=re.MULTILINE)) for text in DOCS.values()
        )
        for name, _, _ in setting_docs()
    }
    assert {name: count for name, count in rows.items() if count != 1} == {}


def test_every_metric_is_documented() -> None:
    metrics = _emitted_names("METRIC_")
    assert semconv.METRIC_NODE_DURATION in metrics
    everything = "\n".join(DOCS.values())
    assert [name for name in metrics if f"`{name}`" not in everything] == []


def test_every_span_attribute_and_event_is_documented() -> None:
    everything = "\n".join(DOCS.values())
    names = [
        value
        for value in vars(semconv).values()
        if isinstance(value, str) and re.fullmatch(r"(reasonflow|gen_ai|error)\.[a-z_.]+", value)
    ]
    assert semconv.EVENT_RETRY in names
    assert [name for name in names if name not in everything] == []


def test_readme_links_resolve() -> None:
    targets = re.findall(r"\]\(((?:docs|collector-config)/[^)#]+)", README)
    assert "docs/configuration.md" in targets
    missing = [target for target in targets if not (ROOT / target).exists()]
    assert missing == []


def _named_images() -> dict[Path, list[str]]:
    """Image path -> the Markdown files that show it (``![alt](path)``, relative to each)."""
    named: dict[Path, list[str]] = {}
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for target in re.findall(r"!\[[^\]]*\]\(([^)\s]+)", page.read_text(encoding="utf-8")):
            if "://" not in target:
                image = (page.parent / target).resolve()
                named.setdefault(image, []).append(page.relative_to(ROOT).as_posix())
    return named


def test_every_image_the_docs_name_exists() -> None:
    named = _named_images()
    assert named, "the README shows the viewer"
    missing = {str(image): pages for image, pages in named.items() if not image.is_file()}
    assert missing == {}


def test_the_docs_pictures_of_the_viewer_are_the_browser_tests_screenshots() -> None:
    """Each one is taken by tests/test_viewer_browser.py, so it is regenerated with the code."""
    from support.browser import DOCS_IMAGES, DOCS_SCREENSHOTS

    shown = {image for image in _named_images() if image.parent == DOCS_IMAGES}
    assert shown == {DOCS_IMAGES / name for name in DOCS_SCREENSHOTS}
    assert sorted(path.name for path in DOCS_IMAGES.iterdir()) == sorted(DOCS_SCREENSHOTS)
