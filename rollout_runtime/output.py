"""Rollout batches on storage: `rollout_{id:06d}.{writer}.{jsonl,parquet}`, published once.

The name carries the rollout id (for people) and the writing process's id (so that no other
process, current or stale, can ever write the same name; see `rollout_runtime.state.artifacts`).
Publishing is create-exclusive: a file, once there, is never replaced. Which file is *the* batch
of a rollout id is what the commit says; read batches through `rollout_runtime.reader`.

One row per sample in slime's sample dict form, plus `batch_group`: the position of the sample's
group in the batch, so that readers get the groups back exactly (a sample's `group_index` is its
prompt's position in the dataset, which need not be unique within a batch, and a custom rollout
function may set it to anything).
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from typing import Any

import fsspec

from rollout_runtime.atomic_write import publish_bytes
from rollout_runtime.state.artifacts import batch_file_name, eval_file_name, join_url
from rollout_runtime.types import Sample, flatten

#: Row key (and Parquet column) holding the sample's group position within its batch.
GROUP_COLUMN = "batch_group"


def _sample_rows(groups: list[list[Any]], rollout_id: int) -> list[dict[str, Any]]:
    rows = []
    for position, group in enumerate(groups):
        for sample in flatten(group):
            row = sample.to_dict()
            if row.get("rollout_id") is None:
                row["rollout_id"] = rollout_id
            row[GROUP_COLUMN] = position
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


def write_batch(output_dir: str, rollout_id: int, groups: list[list[Sample]], fmt: str, writer_id: str, *,
                before_publish: Callable[[], None] | None = None) -> str:
    """Publish the batch under this writer's name for `rollout_id`; its URL. Never replaces a file."""
    rows = _sample_rows(groups, rollout_id)
    data = encode_parquet(rows) if fmt == "parquet" else encode_jsonl(rows)
    url = join_url(output_dir, batch_file_name(rollout_id, writer_id, fmt))
    publish_bytes(url, data, before_publish)
    return url


def _decode_parquet(data: bytes) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq

    rows = pq.read_table(io.BytesIO(data)).to_pylist()
    for r in rows:
        for k in _JSON_COLUMNS:
            if isinstance(r.get(k), str) and k != "prompt":
                r[k] = json.loads(r[k])
            elif k == "prompt" and isinstance(r.get(k), str):
                try:
                    r[k] = json.loads(r[k])
                except ValueError:
                    pass
    return rows


def decode_batch(data: bytes, fmt: str) -> list[list[Sample]]:
    """The groups of a batch file's bytes, in file order.

    Rows are grouped by `batch_group`; a file without it (written before it existed) is grouped
    by runs of equal `group_index`.
    """
    if fmt == "parquet":
        rows = _decode_parquet(data)
    else:
        rows = [json.loads(line) for line in data.decode().splitlines() if line.strip()]
    groups: list[list[Sample]] = []
    last: Any = object()
    for row in rows:
        key = row.pop(GROUP_COLUMN) if GROUP_COLUMN in row else ("group_index", row.get("group_index"))
        if not groups or key != last:
            groups.append([])
            last = key
        groups[-1].append(Sample.from_dict(row))
    return groups


def read_bytes(url: str) -> bytes:
    with fsspec.open(url, "rb") as fh:
        return fh.read()


def read_batch_groups(url: str) -> list[list[Sample]]:
    """The groups of one batch file (both formats). Trainers: use `rollout_runtime.reader`."""
    return decode_batch(read_bytes(url), "parquet" if url.endswith(".parquet") else "jsonl")


def read_batch(url: str) -> list[Sample]:
    """The samples of one batch file, flat, for tests and downstream tools."""
    return flatten(read_batch_groups(url))


def write_eval(output_dir: str, key: int, report: dict[str, Any], writer_id: str) -> str:
    """Publish eval report `key` under this writer's name (`eval_{id:06d}.{writer}.json`); its URL.

    Like a batch, never replaced: which report is *the* eval of a rollout id is what the commit
    says (`RolloutState.eval_name`), so a stale attempt's report can sit beside it but never
    take its place. Read them with `rollout_runtime.reader.RolloutReader.eval_reports`.
    """
    url = join_url(output_dir, eval_file_name(key, writer_id))
    publish_bytes(url, json.dumps(report, default=str, indent=1).encode())
    return url
