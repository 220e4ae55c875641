"""Post-processing of the generated schemas (used by generate.sh only).

The SDK types every query as ``cog.Dataquery``, an interface with a single marker method, so the
generator emits a closed empty object for it, which no real query satisfies. Grafana's own model
types a query as the common ``DataQuery`` (refId, hide, queryType, datasource) extended by each
datasource plugin with its own fields: that is what replaces it here, open to the plugin's fields.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(schema_path: str, dataquery_path: str, sdk_version: str, root_type: str) -> None:
    schema = json.loads(Path(schema_path).read_text(encoding="utf-8"))
    dataquery = json.loads(Path(dataquery_path).read_text(encoding="utf-8"))["definitions"]["DataQuery"]
    dataquery["additionalProperties"] = True  # the datasource plugin's own query fields
    schema["definitions"]["Dataquery"] = dataquery
    schema["title"] = f"Grafana {root_type} (from @grafana/grafana-foundation-sdk@{sdk_version})"
    json.dump(schema, sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main(*sys.argv[1:5])
