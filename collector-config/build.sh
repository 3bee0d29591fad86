#!/usr/bin/env bash
# Builds the reasonflow-otel backend from source, for run-local.sh (no Docker):
#
#   bin/otelcol-reasonflow   our Collector distribution, built by the OpenTelemetry Collector
#                            Builder (OCB) from builder-config.yaml
#   bin/jaeger               Jaeger v2, built in its own Go module (jaeger/module/go.mod), so
#                            its dependencies never mix with the Collector's
#
# and installs Prometheus, promtool, Alertmanager and amtool from Debian when they are missing.
# Needs Go (go.dev/dl) and the Go module proxy. A second run rebuilds nothing: each binary is
# rebuilt only when its recipe changed (a hash of the manifest or go.mod/go.sum, kept next to
# the binary). `build.sh --force` rebuilds both.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
bin="$here/bin"
tools="$bin/tools"
manifest="$here/builder-config.yaml"
jaeger_module="$here/jaeger/module"
# OCB is released with the Collector: the builder's version is the manifest's release.
ocb_version="v$(sed -n 's/^  version: *//p' "$manifest")"
# The Jaeger v2 release that Go module version v1.x of github.com/jaegertracing/jaeger carries.
jaeger_release="v2.12.0"
force=false
[[ "${1:-}" == "--force" ]] && force=true

say() { printf 'build.sh: %s\n' "$*"; }

recipe_hash() { cat "$@" "$0" | sha256sum | cut -d' ' -f1; }

# True when bin/NAME exists and was built from the recipe files given.
up_to_date() {
  local name="$1"
  shift
  [[ "$force" == false && -x "$bin/$name" && -f "$bin/.$name.recipe" ]] &&
    [[ "$(cat "$bin/.$name.recipe")" == "$(recipe_hash "$@")" ]]
}

mark_built() {
  local name="$1"
  shift
  recipe_hash "$@" >"$bin/.$name.recipe"
}

require_go() {
  command -v go >/dev/null || {
    say "Go is needed to build the Collector and Jaeger: https://go.dev/dl/"
    exit 1
  }
}

build_collector() {
  if up_to_date otelcol-reasonflow "$manifest"; then
    say "otelcol-reasonflow is up to date (builder-config.yaml unchanged)"
    return
  fi
  require_go
  if [[ "$("$tools/builder" version 2>/dev/null || true)" != *"${ocb_version#v}"* ]]; then
    say "installing the OpenTelemetry Collector Builder $ocb_version"
    GOBIN="$tools" go install "go.opentelemetry.io/collector/cmd/builder@$ocb_version"
  fi
  say "building otelcol-reasonflow (a few minutes the first time)"
  local started=$SECONDS
  mkdir -p "$here/build"
  (cd "$here" && "$tools/builder" --config="$manifest")
  install -m 0755 "$here/build/otelcol-reasonflow/otelcol-reasonflow" "$bin/otelcol-reasonflow"
  mark_built otelcol-reasonflow "$manifest"
  say "built otelcol-reasonflow in $((SECONDS - started)) s"
}

build_jaeger() {
  local recipe=("$jaeger_module/go.mod" "$jaeger_module/go.sum")
  if up_to_date jaeger "${recipe[@]}"; then
    say "jaeger is up to date (jaeger/module/go.mod unchanged)"
    return
  fi
  require_go
  say "building jaeger $jaeger_release (a few minutes the first time)"
  local started=$SECONDS
  local version_pkg="github.com/jaegertracing/jaeger/internal/version"
  (cd "$jaeger_module" && go build -trimpath \
    -ldflags "-s -w -X $version_pkg.latestVersion=$jaeger_release" \
    -o "$bin/jaeger" github.com/jaegertracing/jaeger/cmd/jaeger)
  mark_built jaeger "${recipe[@]}"
  say "built jaeger in $((SECONDS - started)) s"
}

# The Debian packages of Prometheus and Alertmanager (each brings its command-line tool).
install_prometheus_packages() {
  local packages=()
  { command -v prometheus && command -v promtool; } >/dev/null || packages+=(prometheus)
  { command -v prometheus-alertmanager && command -v amtool; } >/dev/null ||
    packages+=(prometheus-alertmanager)
  if ((${#packages[@]} == 0)); then
    say "prometheus, promtool, prometheus-alertmanager and amtool are installed"
    return
  fi
  local sudo=()
  ((EUID == 0)) || sudo=(sudo)
  if ! command -v apt-get >/dev/null; then
    say "install ${packages[*]} with your package manager (not a Debian system); run-local.sh needs them"
    return
  fi
  say "installing ${packages[*]} from Debian"
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends \
    "${packages[@]}" >/dev/null
  # The packages start system services on the default ports; run-local.sh runs its own.
  local service
  for service in prometheus prometheus-alertmanager; do
    if command -v systemctl >/dev/null && systemctl is-active --quiet "$service" 2>/dev/null; then
      "${sudo[@]}" systemctl disable --now "$service" >/dev/null 2>&1 || true
    fi
  done
}

print_versions() {
  say "versions:"
  printf '  %s\n' \
    "$("$bin/otelcol-reasonflow" --version)" \
    "jaeger $("$bin/jaeger" version 2>/dev/null | sed -n 's/.*"gitVersion": *"\([^"]*\)".*/\1/p')"
  local tool
  for tool in prometheus promtool prometheus-alertmanager amtool; do
    if command -v "$tool" >/dev/null; then
      printf '  %s\n' "$("$tool" --version 2>&1 | head -n 1)"
    fi
  done
}

mkdir -p "$tools"
build_collector
build_jaeger
install_prometheus_packages
print_versions
