"""Parses a `/metrics` scrape (OpenMetrics text, on stdin) with the reference Prometheus client's
parser, for cli/tests/http.rs: prints one JSON line per sample, [name, labels, value]. A scrape
the parser refuses exits non-zero with its error."""

import json
import sys

from prometheus_client.openmetrics.parser import text_string_to_metric_families

for family in text_string_to_metric_families(sys.stdin.read()):
    for sample in family.samples:
        print(json.dumps([sample.name, sample.labels, sample.value]))
