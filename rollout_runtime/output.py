"""Rollout batches on storage: `rollout_{id:06d}.{jsonl,parquet}`, written atomically.

The name is a function of the rollout id alone, so a batch regenerated after a crash
replaces the uncommitted one instead of sitting beside it: one file per id, ever.
"""

from __future__ import annotations

import io
import json
from typing import Any

import fsspec

from rollout_runtime.atomic_write import write_bytes_atomic
from rollout_runtime.types import Sample, flatten


def batch_name(rollout_id: int, fmt: str) -> str:
    return f"rollout_{rollout_id:06d}.{fmt}"


def batch_url(output_dir: str, rollout_id: int, fmt: str) -> str:
    return f"{output_dir.rstrip('/')}/{batch_name(rollout_id, fmt)}"


def _sample_rows(groups: list[list[Any]], rollout_id: int) -> list[dict[str, Any]]:
    rows = []
    for group in groups:
        for sample in flatten(group):
            row = sample.to_dict()
            if row.get("rollout_id") is None:
                row["rollout_id"] = rollout_id
            rows.append(row)
    return rows


def encode_jsonl(rows: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in rows).encode()


# Fields whose value may be a dict, a list of dicts or mixed types: JSON text in Parquet.
_JSON_COLUMNS = ("prompt", "reward", "metadata", "train_metadata", "multimodal_inputs", "multimodal_train_inputs",
                 "apply_chat_template_kwargs", "spec_info", "prefix_cache_info", "rollout_routed_experts")


def encode_parquet(rows: list[dict[str, Any]]) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    prepared = [{k: (json.dumps(v, default=str) if k in _JSON_COLUMNS or isinstance(v, dict) else v) for k, v in r.items()}
                for r in rows]
    table = pa.Table.from_pylist(prepared)
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


def write_batch(output_dir: str, rollout_id: int, groups: list[list[Sample]], fmt: str = "jsonl") -> str:
    rows = _sample_rows(groups, rollout_id)
    data = encode_parquet(rows) if fmt == "parquet" else encode_jsonl(rows)
    url = batch_url(output_dir, rollout_id, fmt)
    write_bytes_atomic(url, data)
    return url


def read_batch(url: str) -> list[Sample]:
    """Samples of a written batch (both formats), for tests and downstream tools."""
    if url.endswith(".parquet"):
        import pyarrow.parquet as pq

        with fsspec.open(url, "rb") as fh:
            rows = pq.read_table(fh).to_pylist()
        for r in rows:
            for k in _JSON_COLUMNS:
                if isinstance(r.get(k), str) and k != "prompt":
                    r[k] = json.loads(r[k])
                elif k == "prompt" and isinstance(r.get(k), str):
                    try:
                        r[k] = json.loads(r[k])
                    except ValueError:
                        pass
    else:
        with fsspec.open(url, "rt") as fh:
            rows = [json.loads(line) for line in fh if line.strip()]
    return [Sample.from_dict(r) for r in rows]


def write_json(output_dir: str, name: str, payload: Any) -> str:
    url = f"{output_dir.rstrip('/')}/{name}"
    write_bytes_atomic(url, json.dumps(payload, default=str, indent=1).encode())
    return url
