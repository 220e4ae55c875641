#!/usr/bin/env bash
# Regenerates the vendored JSON Schemas from the official TypeScript types that Grafana Labs
# publishes on npm in @grafana/grafana-foundation-sdk (no JSON Schema file ships in any of its
# PyPI or npm artifacts). Needs npm; not run by the tests or CI, which use the vendored output.
set -euo pipefail
SDK_VERSION=11.6.0-cogv0.0.x.1769699379
GENERATOR_VERSION=2.9.0
HERE="$(cd "$(dirname "$0")" && pwd)"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"
npm pack --silent "@grafana/grafana-foundation-sdk@$SDK_VERSION" >/dev/null
tar xzf grafana-grafana-foundation-sdk-*.tgz
npm init -y >/dev/null
npm install --silent --no-audit --no-fund "ts-json-schema-generator@$GENERATOR_VERSION" >/dev/null
DIST="$WORK/package/dist"
gen() {  # gen FILE TYPE OUT
  node_modules/.bin/ts-json-schema-generator --path "$DIST/$1" --type "$2" --functions hide \
    --no-type-check -o "$WORK/$3"
}
gen dashboard/types.gen.d.ts Dashboard dashboard.raw.json
gen alerting/types.gen.d.ts Rule alert-rule.raw.json
gen common/types.gen.d.ts DataQuery dataquery.raw.json
python3 "$HERE/patch_schema.py" "$WORK/dashboard.raw.json" "$WORK/dataquery.raw.json" \
  "$SDK_VERSION" Dashboard > "$HERE/dashboard.schema.json"
python3 "$HERE/patch_schema.py" "$WORK/alert-rule.raw.json" "$WORK/dataquery.raw.json" \
  "$SDK_VERSION" Rule > "$HERE/alert-rule.schema.json"
