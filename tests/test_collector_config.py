"""The shipped backend stack (collector-config/), checked without Docker.

Collector configs are checked the way the Collector checks them at startup: every component a
pipeline names is defined, every defined component is used, every connector is an exporter of
one pipeline and a receiver of another (with signal types it supports), every component type
exists in the pinned release under its current name, and ``${env:VAR:-default}`` resolves.
Prometheus configuration and rules go through the real ``promtool`` (check config, check rules,
test rules); the Grafana dashboard's PromQL is parsed by promtool too.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from support.config_blocks import uncommented_blocks
from support.prometheus import (
    check_promql,
    dashboard_queries,
    relax_thresholds,
    run_promtool,
    substitute_grafana_variables,
)

REPO = Path(__file__).resolve().parents[1]
CONFIG_DIR = REPO / "collector-config"
SINGLE = CONFIG_DIR / "otel-collector.yaml"
AGENT = CONFIG_DIR / "scaled" / "otel-agent.yaml"
GATEWAY = CONFIG_DIR / "scaled" / "otel-gateway.yaml"
JAEGER = CONFIG_DIR / "jaeger" / "config.yaml"
COMPOSE = CONFIG_DIR / "compose.yaml"
SCALED_COMPOSE = CONFIG_DIR / "scaled" / "compose.yaml"
PROMETHEUS = CONFIG_DIR / "prometheus.yml"
SCALED_PROMETHEUS = CONFIG_DIR / "scaled" / "prometheus.yml"
RULES = CONFIG_DIR / "rules" / "reasonflow-alerts.yml"
RULES_TEST = CONFIG_DIR / "rules-tests" / "reasonflow-alerts.test.yml"
DASHBOARD = CONFIG_DIR / "grafana" / "dashboards" / "workflows.json"
DATASOURCES = CONFIG_DIR / "grafana" / "provisioning" / "datasources" / "datasources.yaml"
DASHBOARD_PROVIDERS = CONFIG_DIR / "grafana" / "provisioning" / "dashboards" / "dashboards.yaml"
README = CONFIG_DIR / "README.md"
ALERTS_DOC = REPO / "docs" / "alerts.md"

# The scaled configs are judged by the Collector itself (tests/test_scaled_tier.py).
COLLECTOR_CONFIGS = [SINGLE]

# --- The pinned releases ------------------------------------------------------------------------

COLLECTOR_IMAGE = "otel/opentelemetry-collector-contrib:0.162.0"
PINNED_IMAGES = {
    "otel/opentelemetry-collector-contrib": "0.162.0",
    "jaegertracing/jaeger": "2.22.0",
    "prom/prometheus": "v3.15.0",
    "grafana/grafana": "13.2.3",
    "prom/alertmanager": "v0.35.1",
}

# Component type names of otelcol-contrib 0.162.0 that these configs may use, with the signals
# each supports (as an exporter/processor/receiver; connectors as exporter -> receiver signal).
# Checked against the release sources:
#   - core (opentelemetry-collector#14396): the `otlp` receiver, `memory_limiter`, `batch`,
#     `debug`, `forward` and `zpages` keep their names; the `otlp` and `otlphttp` exporters were
#     renamed `otlp_grpc` and `otlp_http` in v0.144.0 (#14403, #14397).
#   - contrib (#45339, snake_case renames): `resource_detection` (#48525) and `load_balancing`
#     (#48533) since v0.152; `span_metrics` (connector/spanmetricsconnector/metadata.yaml:
#     `type: span_metrics`, `deprecated_type: spanmetrics`); `tail_sampling`, `health_check`,
#     `prometheus` and `kafka` per their metadata.yaml.
ALL = frozenset({"traces", "metrics", "logs"})
RELEASE_COMPONENTS: dict[str, dict[str, frozenset[str]]] = {
    "receivers": {"otlp": ALL},
    "processors": {
        "memory_limiter": ALL,
        "batch": ALL,
        "resource_detection": ALL,
        "tail_sampling": frozenset({"traces"}),
    },
    "exporters": {
        "otlp_grpc": ALL,
        "otlp_http": ALL,
        "debug": ALL,
        "prometheus": frozenset({"metrics"}),
        "load_balancing": ALL,
        "kafka": ALL,
    },
    "connectors": {"span_metrics": frozenset({"traces"}), "forward": ALL},
    "extensions": {"health_check": frozenset(), "zpages": frozenset()},
}
CONNECTOR_OUTPUTS = {"span_metrics": {"traces": {"metrics"}}, "forward": {s: {s} for s in ALL}}
# Old names the release still accepts with a deprecation warning: the configs must not use them.
DEPRECATED_ALIASES = {
    ("exporters", "otlp"): "otlp_grpc",
    ("exporters", "otlphttp"): "otlp_http",
    ("exporters", "loadbalancing"): "load_balancing",
    ("processors", "resourcedetection"): "resource_detection",
    ("connectors", "spanmetrics"): "span_metrics",
}

# Jaeger v2 (2.22.0) is itself a Collector distribution with its own components.
JAEGER_COMPONENTS: dict[str, dict[str, frozenset[str]]] = {
    "receivers": {"otlp": ALL},
    "processors": {"batch": ALL},
    "exporters": {"jaeger_storage_exporter": frozenset({"traces"})},
    "connectors": {},
    "extensions": {
        "jaeger_storage": frozenset(),
        "jaeger_query": frozenset(),
        "healthcheckv2": frozenset(),
    },
}

# --- Loading configs the way the Collector does -------------------------------------------------

ENV_REF = re.compile(r"\$\{env:([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
ANY_REF = re.compile(r"\$\{[^}]*\}|\$[A-Za-z_]")


def expand_env(node: Any, environ: Mapping[str, str]) -> Any:
    """Resolve ``${env:VAR:-default}`` like the Collector's env provider.

    A value that is one reference whole takes the YAML type of the text (``10`` is an int); a
    reference inside a longer string is spliced in as text. A variable that is unset and has no
    default resolves to the empty string, as in the Collector.
    """
    if isinstance(node, dict):
        return {key: expand_env(value, environ) for key, value in node.items()}
    if isinstance(node, list):
        return [expand_env(value, environ) for value in node]
    if not isinstance(node, str):
        return node

    def value_of(match: re.Match[str]) -> str:
        return environ.get(match.group(1), match.group(2) or "")

    whole = ENV_REF.fullmatch(node)
    if whole:
        return yaml.safe_load(value_of(whole)) if value_of(whole) else None
    return ENV_REF.sub(value_of, node)


def load_collector_config(path: Path, environ: Mapping[str, str] | None = None) -> dict:
    return expand_env(yaml.safe_load(path.read_text()), environ or {})


def env_references(path: Path) -> dict[str, str | None]:
    """Every ``${env:...}`` reference in the file's YAML (comments excluded) with its default."""
    refs: dict[str, str | None] = {}

    def visit(node: Any) -> None:
        if isinstance(node, dict):
            for value in node.values():
                visit(value)
        elif isinstance(node, list):
            for value in node:
                visit(value)
        elif isinstance(node, str):
            for match in ENV_REF.finditer(node):
                refs[match.group(1)] = match.group(2)

    visit(yaml.safe_load(path.read_text()))
    return refs


def component_type(component_id: str) -> str:
    return component_id.split("/", 1)[0]


def pipeline_signal(pipeline_id: str) -> str:
    return component_type(pipeline_id)


def collector_problems(
    config: Mapping[str, Any],
    release: Mapping[str, Mapping[str, frozenset[str]]] = RELEASE_COMPONENTS,
) -> list[str]:
    """What the Collector would refuse (or warn about) when loading this config; [] if none."""
    problems: list[str] = []
    kinds = ("receivers", "processors", "exporters", "connectors", "extensions")
    defined = {kind: dict(config.get(kind) or {}) for kind in kinds}
    service = config.get("service") or {}
    pipelines = service.get("pipelines") or {}

    for kind, components in defined.items():
        for component_id in components:
            kind_type = component_type(component_id)
            if (kind, kind_type) in DEPRECATED_ALIASES:
                problems.append(
                    f"{kind} {component_id}: deprecated alias, use "
                    f"{DEPRECATED_ALIASES[(kind, kind_type)]}"
                )
            elif kind_type not in release[kind]:
                problems.append(f"{kind} {component_id}: unknown type {kind_type!r}")

    if not pipelines:
        problems.append("service.pipelines: no pipelines")
    used: dict[str, set[str]] = {kind: set() for kind in kinds}
    connector_as_exporter: dict[str, set[str]] = {}
    connector_as_receiver: dict[str, set[str]] = {}
    for pipeline_id, pipeline in pipelines.items():
        signal = pipeline_signal(pipeline_id)
        if signal not in ALL:
            problems.append(f"pipeline {pipeline_id}: unknown signal {signal!r}")
            continue
        for role in ("receivers", "processors", "exporters"):
            ids = pipeline.get(role) or []
            if role != "processors" and not ids:
                problems.append(f"pipeline {pipeline_id}: no {role}")
            if len(set(ids)) != len(ids):
                problems.append(f"pipeline {pipeline_id}: a component is listed twice in {role}")
            for component_id in ids:
                kind = role
                if role != "processors" and component_id in defined["connectors"]:
                    kind = "connectors"
                    side = connector_as_receiver if role == "receivers" else connector_as_exporter
                    side.setdefault(component_id, set()).add(signal)
                if component_id not in defined[kind]:
                    problems.append(f"pipeline {pipeline_id}: {role} {component_id} is not defined")
                    continue
                used[kind].add(component_id)
                supported = release[kind].get(component_type(component_id), frozenset())
                if kind != "connectors" and signal not in supported:
                    problems.append(f"pipeline {pipeline_id}: {component_id} does not do {signal}")

    for connector_id in defined["connectors"]:
        kind_type = component_type(connector_id)
        inputs = connector_as_exporter.get(connector_id, set())
        outputs = connector_as_receiver.get(connector_id, set())
        if not inputs:
            problems.append(f"connectors {connector_id}: not used as an exporter")
        if not outputs:
            problems.append(f"connectors {connector_id}: not used as a receiver")
        routes = CONNECTOR_OUTPUTS.get(kind_type, {})
        for signal_in in inputs:
            if signal_in not in routes:
                problems.append(f"connectors {connector_id}: cannot consume {signal_in}")
        possible = {out for signal_in in inputs for out in routes.get(signal_in, set())}
        for signal_out in outputs - possible:
            problems.append(f"connectors {connector_id}: cannot emit {signal_out} from {inputs}")

    service_extensions = service.get("extensions") or []
    for extension_id in service_extensions:
        if extension_id not in defined["extensions"]:
            problems.append(f"service.extensions: {extension_id} is not defined")
        used["extensions"].add(extension_id)

    for kind in kinds:
        for component_id in defined[kind]:
            if component_id not in used[kind]:
                problems.append(f"{kind} {component_id}: defined but not used")
    return problems


def pipelines_with(config: Mapping[str, Any], component_id: str) -> list[str]:
    return [
        pipeline_id
        for pipeline_id, pipeline in config["service"]["pipelines"].items()
        if any(component_id in (pipeline.get(role) or []) for role in pipeline)
    ]


# --- The checker itself ------------------------------------------------------------------------


def minimal_config() -> dict[str, Any]:
    return {
        "receivers": {"otlp": {}},
        "processors": {"memory_limiter": {}},
        "exporters": {"debug": {}},
        "connectors": {"span_metrics": {}},
        "extensions": {"health_check": {}},
        "service": {
            "extensions": ["health_check"],
            "pipelines": {
                "traces": {
                    "receivers": ["otlp"],
                    "processors": ["memory_limiter"],
                    "exporters": ["span_metrics"],
                },
                "metrics": {"receivers": ["span_metrics"], "exporters": ["debug"]},
            },
        },
    }


def test_checker_accepts_a_minimal_valid_config():
    assert collector_problems(minimal_config()) == []


def add_undefined_processor(c):
    c["service"]["pipelines"]["traces"]["processors"].append("batch")


def add_unused_exporter(c):
    c["exporters"]["otlp_grpc/unused"] = {}


def drop_connector_output(c):
    del c["service"]["pipelines"]["metrics"]
    del c["exporters"]["debug"]


def add_unknown_type(c):
    c["exporters"]["spanmetrics"] = {}


def add_deprecated_alias(c):
    c["connectors"]["spanmetrics"] = {}


def export_traces_to_prometheus(c):
    c["exporters"]["prometheus"] = {}
    c["service"]["pipelines"]["traces"]["exporters"].append("prometheus")


def sample_metrics(c):
    c["processors"]["tail_sampling"] = {}
    c["service"]["pipelines"]["metrics"]["processors"] = ["tail_sampling"]


def connector_to_wrong_signal(c):
    c["service"]["pipelines"]["logs"] = {"receivers": ["span_metrics"], "exporters": ["debug"]}


def enable_undefined_extension(c):
    c["service"]["extensions"].append("zpages")


@pytest.mark.parametrize(
    ("break_it", "problems"),
    [
        (add_undefined_processor, ["pipeline traces: processors batch is not defined"]),
        (add_unused_exporter, ["exporters otlp_grpc/unused: defined but not used"]),
        (drop_connector_output, ["connectors span_metrics: not used as a receiver"]),
        (
            add_unknown_type,
            [
                "exporters spanmetrics: unknown type 'spanmetrics'",
                "exporters spanmetrics: defined but not used",
            ],
        ),
        (
            add_deprecated_alias,
            [
                "connectors spanmetrics: deprecated alias, use span_metrics",
                "connectors spanmetrics: not used as an exporter",
                "connectors spanmetrics: not used as a receiver",
                "connectors spanmetrics: defined but not used",
            ],
        ),
        (export_traces_to_prometheus, ["pipeline traces: prometheus does not do traces"]),
        (sample_metrics, ["pipeline metrics: tail_sampling does not do metrics"]),
        (connector_to_wrong_signal, ["connectors span_metrics: cannot emit logs from {'traces'}"]),
        (enable_undefined_extension, ["service.extensions: zpages is not defined"]),
    ],
    ids=lambda value: value.__name__ if callable(value) else "",
)
def test_checker_reports_what_the_collector_refuses(break_it, problems):
    config = minimal_config()
    break_it(config)
    assert collector_problems(config) == problems


def test_env_expansion_types_whole_values_and_splices_partial_ones():
    raw = {"a": "${env:N:-10}", "b": "host:${env:P:-4317}", "c": "${env:UNSET}"}
    assert expand_env(raw, {}) == {"a": 10, "b": "host:4317", "c": None}
    assert expand_env(raw, {"N": "12.5", "P": "9"}) == {"a": 12.5, "b": "host:9", "c": None}


# --- Collector configs ---------------------------------------------------------------------------


@pytest.mark.parametrize("path", COLLECTOR_CONFIGS, ids=lambda p: p.name)
def test_collector_config_loads_as_the_collector_would(path):
    assert collector_problems(load_collector_config(path)) == []


@pytest.mark.parametrize("path", COLLECTOR_CONFIGS, ids=lambda p: p.name)
def test_every_setting_is_an_env_var_with_a_default(path):
    text = yaml.safe_dump(yaml.safe_load(path.read_text()))
    references = ANY_REF.findall(text)
    assert references, "expected ${env:...} settings"
    assert all(ENV_REF.fullmatch(ref) for ref in references), references
    assert all(default for default in env_references(path).values()), env_references(path)


@pytest.mark.parametrize("path", COLLECTOR_CONFIGS, ids=lambda p: p.name)
def test_memory_limiter_comes_first_wherever_data_enters(path):
    config = load_collector_config(path)
    for pipeline_id, pipeline in config["service"]["pipelines"].items():
        if "otlp" in pipeline["receivers"] or pipeline_id == "metrics":
            assert pipeline["processors"][0] == "memory_limiter", pipeline_id


@pytest.mark.parametrize("path", [SINGLE], ids=lambda p: p.name)
def test_otlp_receiver_listens_on_all_interfaces(path):
    protocols = load_collector_config(path)["receivers"]["otlp"]["protocols"]
    assert protocols["grpc"]["endpoint"] == "0.0.0.0:4317"
    assert protocols["http"]["endpoint"] == "0.0.0.0:4318"
    overridden = load_collector_config(path, {"OTLP_GRPC_ENDPOINT": "127.0.0.1:5317"})
    assert overridden["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"] == "127.0.0.1:5317"


@pytest.mark.parametrize("path", [SINGLE], ids=lambda p: p.name)
def test_span_metrics_see_every_span_and_sampling_is_a_separate_pipeline(path):
    config = load_collector_config(path)
    pipelines = config["service"]["pipelines"]
    intake = pipelines["traces"]
    assert intake["receivers"] == ["otlp"]
    assert "tail_sampling" not in intake.get("processors", [])
    assert intake["exporters"] == ["span_metrics", "forward/sampling"]
    assert pipelines["traces/sampling"] == {
        "receivers": ["forward/sampling"],
        "processors": ["tail_sampling"],
        "exporters": ["otlp_grpc/jaeger"],
    }
    assert pipelines_with(config, "tail_sampling") == ["traces/sampling"]
    assert "span_metrics" in pipelines["metrics"]["receivers"]
    assert pipelines["metrics"]["exporters"] == ["prometheus"]


def tail_sampling(path: Path, environ: dict[str, str]) -> tuple[str, list[dict]]:
    """The decision wait and the policies, as the Collector would load them."""
    sampling = load_collector_config(path, environ)["processors"]["tail_sampling"]
    return sampling["decision_wait"], sampling["policies"]


def sampling_policies(percentage: float) -> list[dict]:
    return [
        {"name": "keep-errors", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}},
        {"name": "keep-slow", "type": "latency", "latency": {"threshold_ms": 10000}},
        {
            "name": "keep-percentage-of-the-rest",
            "type": "probabilistic",
            "probabilistic": {"sampling_percentage": percentage},
        },
    ]


def test_single_machine_collector_keeps_every_trace_and_decides_within_seconds():
    """The Jaeger quick start shows the example's traces the first time, seconds after."""
    decision_wait, policies = tail_sampling(SINGLE, {})

    assert policies == sampling_policies(100)  # errors and slow traces still always kept
    assert parse_duration(decision_wait) <= 10


def test_scaled_gateways_keep_their_sampling_ratio():
    decision_wait, policies = tail_sampling(GATEWAY, {})

    assert policies == sampling_policies(10)
    assert decision_wait == "60s"


def compose_defaults(compose: Path, service: str) -> dict[str, str]:
    """The values compose passes a service when the shell sets none (``${VAR:-default}``)."""
    environment = yaml.safe_load(compose.read_text())["services"][service]["environment"]
    defaults = {}
    for name, value in environment.items():
        match = re.fullmatch(r"\$\{\w+:-(.*)\}", str(value))
        if match:
            defaults[name] = match.group(1)
    return defaults


@pytest.mark.parametrize(
    ("compose", "service", "config"),
    [(COMPOSE, "otel-collector", SINGLE), (SCALED_COMPOSE, "otel-gateway", GATEWAY)],
    ids=["single", "scaled"],
)
def test_compose_runs_each_collector_with_the_configs_own_sampling(compose, service, config):
    """Compose sets the variables, so its defaults are the ones that count."""
    assert tail_sampling(config, compose_defaults(compose, service)) == tail_sampling(config, {})


@pytest.mark.parametrize("path", [SINGLE, GATEWAY], ids=lambda p: p.name)
def test_production_sampling_settings_are_documented_with_each_config(path):
    header = path.read_text()
    assert "TAIL_SAMPLING_PERCENTAGE" in header
    assert "production" in header


@pytest.mark.parametrize("path", [SINGLE, GATEWAY], ids=lambda p: p.name)
def test_tail_sampling_share_and_wait_are_configurable(path):
    decision_wait, tuned = tail_sampling(
        path,
        {
            "TAIL_SAMPLING_PERCENTAGE": "2.5",
            "TAIL_SAMPLING_LATENCY_THRESHOLD_MS": "30000",
            "TAIL_SAMPLING_DECISION_WAIT": "5m",
        },
    )
    assert decision_wait == "5m"
    assert tuned[1]["latency"] == {"threshold_ms": 30000}
    assert tuned[2]["probabilistic"] == {"sampling_percentage": 2.5}


def parse_duration(text: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    match = re.fullmatch(r"([0-9.]+)(ms|s|m|h)", text)
    assert match, text
    return float(match.group(1)) * units[match.group(2)]


@pytest.mark.parametrize("path", [SINGLE], ids=lambda p: p.name)
def test_span_metrics_buckets_cover_milliseconds_to_minutes(path):
    connector = load_collector_config(path)["connectors"]["span_metrics"]
    assert connector["namespace"] == "traces.span.metrics"
    assert connector["histogram"]["unit"] == "s"
    buckets = [parse_duration(b) for b in connector["histogram"]["explicit"]["buckets"]]
    assert buckets == sorted(set(buckets))
    assert buckets[0] <= 0.005
    assert buckets[-1] >= 600
    assert connector["exemplars"] == {"enabled": True}
    assert [d["name"] for d in connector["dimensions"]] == [
        "reasonflow.engine",
        "gen_ai.workflow.name",
        "reasonflow.node.name",
        "error.type",
    ]


@pytest.mark.parametrize("path", COLLECTOR_CONFIGS, ids=lambda p: p.name)
def test_metrics_leave_through_the_prometheus_exporter_with_exemplars(path):
    exporter = load_collector_config(path)["exporters"]["prometheus"]
    assert exporter["endpoint"] == "0.0.0.0:8889"
    assert exporter["enable_open_metrics"] is True


@pytest.mark.parametrize("path", [SINGLE, GATEWAY], ids=lambda p: p.name)
def test_sampled_traces_go_to_jaeger_over_otlp_with_exporter_batching(path):
    exporter = load_collector_config(path)["exporters"]["otlp_grpc/jaeger"]
    assert exporter["endpoint"] == "jaeger:4317"
    assert exporter["tls"] == {"insecure": True}
    assert exporter["sending_queue"]["batch"]["flush_timeout"] == "1s"
    assert load_collector_config(path, {"JAEGER_OTLP_ENDPOINT": "traces.internal:4317"})[
        "exporters"
    ]["otlp_grpc/jaeger"]["endpoint"] == ("traces.internal:4317")


@pytest.mark.parametrize("path", COLLECTOR_CONFIGS, ids=lambda p: p.name)
def test_pushing_exporters_batch_and_the_batch_processor_is_not_used(path):
    config = load_collector_config(path)
    assert "batch" not in config.get("processors", {})
    pushing = {
        exporter_id: settings
        for exporter_id, settings in config["exporters"].items()
        if component_type(exporter_id) in {"otlp_grpc", "load_balancing"}
    }
    assert pushing
    for exporter_id, settings in pushing.items():
        queue = settings.get("sending_queue") or settings["protocol"]["otlp"]["sending_queue"]
        assert queue["sizer"] == "items", exporter_id
        assert queue["batch"] == {"flush_timeout": "1s", "min_size": 2048, "max_size": 8192}


@pytest.mark.parametrize("path", COLLECTOR_CONFIGS, ids=lambda p: p.name)
def test_health_check_extension_is_on(path):
    config = load_collector_config(path)
    assert config["service"]["extensions"] == ["health_check"]
    assert config["extensions"]["health_check"] == {"endpoint": "0.0.0.0:13133"}


def test_kafka_variant_is_a_valid_exporter_for_the_intake_pipeline():
    for path in (SINGLE,):
        [kafka] = [expand_env(block, {}) for block in uncommented_blocks(path, "kafka:")]
        assert kafka["kafka"]["traces"]["topic"] == "reasonflow-spans"
        assert kafka["kafka"]["brokers"] == ["kafka:9092"]
        config = load_collector_config(path)
        config["exporters"].update(kafka)
        config["service"]["pipelines"]["traces"]["exporters"].append("kafka")
        assert collector_problems(config) == []


# --- Jaeger --------------------------------------------------------------------------------------


def test_jaeger_config_is_a_valid_collector_config_with_spm_wired_to_prometheus():
    config = load_collector_config(JAEGER)
    assert collector_problems(config, JAEGER_COMPONENTS) == []
    storage = config["extensions"]["jaeger_storage"]
    query = config["extensions"]["jaeger_query"]["storage"]
    assert query["traces"] in storage["backends"]
    assert config["exporters"]["jaeger_storage_exporter"]["trace_storage"] == query["traces"]
    prometheus = storage["metric_backends"][query["metrics"]]["prometheus"]
    assert prometheus == {
        "endpoint": "http://prometheus:9090",
        "metric_namespace": "traces_span_metrics",
        "latency_unit": "s",
        "normalize_calls": True,
        "normalize_duration": True,
    }
    # The namespace and unit Jaeger queries are the ones the Collector's span_metrics emits.
    span_metrics = load_collector_config(SINGLE)["connectors"]["span_metrics"]
    assert span_metrics["namespace"].replace(".", "_") == prometheus["metric_namespace"]
    assert span_metrics["histogram"]["unit"] == prometheus["latency_unit"]


def test_jaeger_long_retention_variants_are_complete_backends():
    blocks = [expand_env(b, {}) for b in uncommented_blocks(JAEGER, "traces_store:")]
    assert [next(iter(b["traces_store"])) for b in blocks] == ["elasticsearch", "opensearch"]
    for block in blocks:
        [(store, backend)] = block["traces_store"].items()
        assert backend["server_urls"] == [f"http://{store}:9200"]
        assert backend["indices"]["index_prefix"] == "reasonflow"
        for index in ("spans", "services"):
            assert backend["indices"][index]["rollover_frequency"] == "day"
        # Swapping it in gives a Jaeger config that still loads.
        config = load_collector_config(JAEGER)
        config["extensions"]["jaeger_storage"]["backends"].update(block)
        assert collector_problems(config, JAEGER_COMPONENTS) == []


# --- Compose ------------------------------------------------------------------------------------


def compose_services(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())["services"]


@pytest.mark.parametrize("path", [COMPOSE], ids=["single"])
def test_compose_pins_every_image_and_mounts_existing_files(path):
    services = compose_services(path)
    for name, service in services.items():
        repository, _, tag = service["image"].partition(":")
        assert PINNED_IMAGES.get(repository) == tag, f"{name}: {service['image']}"
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("."):
                assert (path.parent / source).exists(), f"{name}: {source} missing"


def test_compose_wires_collector_jaeger_prometheus_and_grafana():
    services = compose_services(COMPOSE)
    assert set(services) == {"otel-collector", "jaeger", "prometheus", "alertmanager", "grafana"}
    collector = services["otel-collector"]
    assert collector["image"] == COLLECTOR_IMAGE
    assert {"4317:4317", "4318:4318"} <= set(collector["ports"])
    assert "./otel-collector.yaml:/etc/otelcol-contrib/config.yaml:ro" in collector["volumes"]
    # Every variable compose passes in is one the Collector config reads.
    assert set(collector["environment"]) <= set(env_references(SINGLE))

    prometheus = services["prometheus"]
    assert "--enable-feature=exemplar-storage" in prometheus["command"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["command"]
    assert "./rules:/etc/prometheus/rules:ro" in prometheus["volumes"]

    jaeger = services["jaeger"]
    assert jaeger["command"] == ["--config", "/etc/jaeger/config.yaml"]
    assert "./jaeger/config.yaml:/etc/jaeger/config.yaml:ro" in jaeger["volumes"]
    assert set(jaeger["environment"]) <= set(env_references(JAEGER))

    grafana = services["grafana"]
    assert "./grafana/provisioning:/etc/grafana/provisioning:ro" in grafana["volumes"]
    mount = next(v for v in grafana["volumes"] if v.startswith("./grafana/dashboards:"))
    providers = yaml.safe_load(DASHBOARD_PROVIDERS.read_text())["providers"]
    assert [p["options"]["path"] for p in providers] == [mount.split(":")[1]]


def test_scaled_compose_runs_agents_in_front_of_replicated_gateways():
    services = compose_services(SCALED_COMPOSE)
    assert services["otel-agent"]["environment"]["GATEWAY_HOSTNAME"] == "otel-gateway"
    assert services["otel-gateway"]["deploy"]["replicas"] >= 2
    assert "ports" not in services["otel-gateway"]
    assert (
        "./otel-agent.yaml:/etc/otelcol-contrib/config.yaml:ro"
        in (services["otel-agent"]["volumes"])
    )


# --- Prometheus ---------------------------------------------------------------------------------


def test_prometheus_scrapes_the_collector_exporter_keeping_its_labels():
    config = yaml.safe_load(PROMETHEUS.read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    exporter = jobs["otel-collector-exporter"]
    assert exporter["honor_labels"] is True
    assert exporter["static_configs"] == [{"targets": ["otel-collector:8889"]}]
    assert config["rule_files"] == ["rules/*.yml"]


@pytest.mark.parametrize("path", [PROMETHEUS, SCALED_PROMETHEUS], ids=["single", "scaled"])
def test_promtool_check_config(path):
    result = run_promtool("check", "config", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 1 rule files found" in result.stdout
    assert "SUCCESS: 17 rules found" in result.stdout


def test_promtool_check_rules():
    result = run_promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 17 rules found" in result.stdout


def test_promtool_test_rules():
    result = run_promtool("test", "rules", RULES_TEST.name, cwd=RULES_TEST.parent)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def alert_rules() -> dict[str, dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return {r["alert"]: r for g in groups for r in g["rules"] if "alert" in r}


def test_alerts_cover_errors_latency_retries_stopped_flows_and_the_collector():
    alerts = alert_rules()
    assert {name: rule["labels"]["severity"] for name, rule in alerts.items()} == {
        "ReasonflowNodeErrorRatioHigh": "warning",
        "ReasonflowFlowErrorRatioHigh": "critical",
        "ReasonflowNodeLatencyP95High": "warning",
        "ReasonflowFlowLatencyP95High": "warning",
        "ReasonflowNodeRetriesHigh": "warning",
        "ReasonflowFlowStopped": "critical",
        "ReasonflowCollectorDroppingData": "warning",
    }
    floored = {
        name
        for name, rule in alerts.items()
        if re.search(r"and reasonflow:(node|flow)_runs:rate5m \* 300 >= \d+", rule["expr"])
    }
    assert floored == set(alerts) - {"ReasonflowFlowStopped", "ReasonflowCollectorDroppingData"}
    for name, rule in alerts.items():
        assert {"summary", "description"} <= set(rule["annotations"]), name
    tested = set(re.findall(r"alertname: (\w+)", RULES_TEST.read_text()))
    assert tested == set(alerts)


def test_alert_thresholds_are_documented_in_the_rules_and_docs():
    header = RULES.read_text().split("groups:")[0]
    docs = ALERTS_DOC.read_text()
    for name in alert_rules():
        assert name in header
        assert f"`{name}`" in docs


# --- Grafana ------------------------------------------------------------------------------------


def load_dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def test_grafana_datasources_link_exemplars_to_jaeger():
    datasources = {d["uid"]: d for d in yaml.safe_load(DATASOURCES.read_text())["datasources"]}
    assert datasources["prometheus"]["type"] == "prometheus"
    assert datasources["prometheus"]["url"] == "http://prometheus:9090"
    assert datasources["jaeger"]["type"] == "jaeger"
    assert datasources["jaeger"]["url"] == "http://jaeger:16686"
    destinations = datasources["prometheus"]["jsonData"]["exemplarTraceIdDestinations"]
    assert destinations[0]["name"] == "trace_id"
    assert destinations[0]["datasourceUid"] == "jaeger"


def test_dashboard_has_service_flow_and_node_variables():
    dashboard = load_dashboard()
    assert dashboard["title"] == "Workflows"
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert set(variables) == {"datasource", "service", "flow", "node"}
    assert variables["datasource"]["query"] == "prometheus"
    for name in ("service", "flow", "node"):
        assert variables[name]["includeAll"] is True
        assert variables[name]["allValue"] == ".*"
    assert variables["node"]["definition"] == (
        'label_values(reasonflow_node_duration_seconds_count{job=~"$service", '
        'gen_ai_workflow_name=~"$flow"}, reasonflow_node_name)'
    )


def test_dashboard_panels_are_unique_and_use_the_datasource_variable():
    dashboard = load_dashboard()
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])
    assert len({p["title"] for p in panels}) == len(panels)
    for panel in panels:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
    titles = {p["title"] for p in panels}
    assert {
        "Flow runs / s",
        "Flow error ratio",
        "Flow duration p50 / p95 / p99",
        "Node runs / s",
        "Node error ratio",
        "Node duration p50 / p95 / p99",
        "In-flight nodes",
        "CPU time per node run (mean)",
        "Memory growth per node run (p95)",
        "Slowest nodes (p95)",
        "Most failing nodes",
        "Process CPU (cores)",
        "Process memory",
    } <= titles


PROJECT_METRICS = {
    "reasonflow_flow_duration_seconds_bucket",
    "reasonflow_flow_duration_seconds_count",
    "reasonflow_node_duration_seconds_bucket",
    "reasonflow_node_duration_seconds_count",
    "reasonflow_node_retries_total",
    "reasonflow_node_fallbacks_total",
    "reasonflow_node_active",
    "reasonflow_node_cpu_time_seconds_sum",
    "reasonflow_node_cpu_time_seconds_count",
    "reasonflow_node_memory_growth_bytes_bucket",
    "process_cpu_time_seconds_total",
    "process_memory_usage_bytes",
    "process_thread_count",
    "process_open_file_descriptor_count",
    "cpython_gc_collections_total",
}
SPAN_METRICS = {"traces_span_metrics_calls_total", "traces_span_metrics_duration_seconds_bucket"}


def metric_names(expr: str) -> set[str]:
    return set(re.findall(r"\b((?:reasonflow|process|cpython|traces)_[a-z_]+)\{", expr))


def test_dashboard_queries_use_the_metrics_the_project_emits():
    used = set().union(*(metric_names(q.expr) for q in dashboard_queries(load_dashboard())))
    assert used == PROJECT_METRICS | SPAN_METRICS


def test_dashboard_duration_panels_show_exemplars():
    queries = dashboard_queries(load_dashboard())
    with_exemplars = {q.panel for q in queries if q.exemplar}
    assert with_exemplars == {
        "Flow duration p50 / p95 / p99",
        "Node duration p50 / p95 / p99",
        "Span duration p95 by span name",
    }


def test_every_dashboard_and_rule_expression_is_valid_promql(tmp_path):
    queries = [substitute_grafana_variables(q.expr) for q in dashboard_queries(load_dashboard())]
    variables = [
        re.sub(r"^label_values\((.*), \w+\)$", r"\1", v["definition"])
        for v in load_dashboard()["templating"]["list"]
        if v["type"] == "query"
    ]
    expressions = [*queries, *(substitute_grafana_variables(v) for v in variables)]
    assert len(expressions) == 32
    result = check_promql(expressions, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(expressions)} rules found" in result.stdout


def test_promql_check_rejects_a_bad_expression(tmp_path):
    result = check_promql(["sum by (le (rate(x[5m]))"], tmp_path)
    assert result.returncode != 0
    assert "parse error" in result.stdout + result.stderr


def test_relaxed_alert_expressions_only_drop_the_thresholds():
    # test_prometheus_stack evaluates each alert with its thresholds relaxed to >= 0.
    relaxed = {name: relax_thresholds(rule["expr"]) for name, rule in alert_rules().items()}
    assert relaxed == {
        "ReasonflowNodeErrorRatioHigh": "reasonflow:node_error_ratio:rate5m >= 0 "
        "and reasonflow:node_runs:rate5m * 300 >= 0",
        "ReasonflowFlowErrorRatioHigh": "reasonflow:flow_error_ratio:rate5m >= 0 "
        "and reasonflow:flow_runs:rate5m * 300 >= 0",
        "ReasonflowNodeLatencyP95High": "reasonflow:node_duration_seconds:p95_5m >= 0 "
        "and reasonflow:node_runs:rate5m * 300 >= 0",
        "ReasonflowFlowLatencyP95High": "reasonflow:flow_duration_seconds:p95_5m >= 0 "
        "and reasonflow:flow_runs:rate5m * 300 >= 0",
        "ReasonflowNodeRetriesHigh": "reasonflow:node_retries:rate5m / reasonflow:node_runs:rate5m "
        ">= 0 and reasonflow:node_runs:rate5m * 300 >= 0",
        "ReasonflowFlowStopped": "avg_over_time(reasonflow:flow_runs:rate5m[1h] offset 15m) * 3600 "
        ">= 0 unless on (job, gen_ai_workflow_name) reasonflow:flow_runs:rate5m >= 0",
        "ReasonflowCollectorDroppingData": "sum by (job, instance, exporter, receiver) "
        "(rate(otelcol:lost_items:total[5m])) >= 0",
    }


def test_readme_documents_topology_and_variants():
    readme = README.read_text()
    for needle in (
        "load_balancing",
        "routing_key: traceID",
        "otel-agent",
        "otel-gateway",
        "Kafka",
        "Elasticsearch",
        "OpenSearch",
        "TAIL_SAMPLING_PERCENTAGE",
        "remote write",
    ):
        assert needle in readme, needle


def test_every_yaml_and_json_file_parses():
    files = sorted(
        str(p.relative_to(CONFIG_DIR))
        for p in CONFIG_DIR.rglob("*")
        if p.suffix in {".yaml", ".yml", ".json"}
    )
    assert files == [
        "alertmanager/alertmanager.yml",
        "builder-config.yaml",
        "compose.yaml",
        "grafana/dashboards/alerts.json",
        "grafana/dashboards/workflows.json",
        "grafana/provisioning/dashboards/dashboards.yaml",
        "grafana/provisioning/datasources/datasources.yaml",
        "jaeger/config.yaml",
        "otel-collector.yaml",
        "prometheus.yml",
        "rules-tests/reasonflow-alerts.test.yml",
        "rules/reasonflow-alerts.yml",
        "scaled/compose.yaml",
        "scaled/otel-agent.compose.yaml",
        "scaled/otel-agent.yaml",
        "scaled/otel-gateway.yaml",
        "scaled/prometheus.yml",
    ]
    for name in files:
        path = CONFIG_DIR / name
        text = path.read_text()
        loaded = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
        assert isinstance(loaded, dict), name


def test_collector_problems_does_not_modify_the_config():
    config = load_collector_config(SINGLE)
    before = copy.deepcopy(config)
    collector_problems(config)
    assert config == before
