"""Where prompt groups come from: the dataset cursor, and the buffer of recycled groups.

Same classes and methods as slime's `slime/rollout/data_source.py`. The difference that
matters: `save`/`load` persist the partial-rollout buffer together with the cursor
(slime drops the buffer on restart, and the cursor has already moved past those prompts,
so they are silently skipped). State goes through a pluggable `StateStore`.
"""

from __future__ import annotations

import copy
import logging
from abc import ABC, abstractmethod
from typing import Any

from rollout_runtime.dataset import Dataset
from rollout_runtime.misc import load_function, load_tokenizer
from rollout_runtime.processing_utils import load_processor
from rollout_runtime.state.models import DataSourceState, RolloutState
from rollout_runtime.state.open_store import open_state_store
from rollout_runtime.state.store import StateStore
from rollout_runtime.types import Sample

log = logging.getLogger(__name__)


class DataSource(ABC):
    """slime's data source interface, plus the state the runner commits after every rollout.

    `data_source_path` names a subclass, built as `cls(args)`. A source that implements
    `state_dict` / `load_state_dict` has its position (and buffer) committed with each batch and
    restored on resume. One written to slime's interface alone (the five methods below) persists
    itself: the runner calls its `save(rollout_id)` before each commit and its `load(rollout_id)` of the
    last committed rollout on resume (see `snapshot` / `restore`).
    """

    @abstractmethod
    def get_samples(self, num_samples: int) -> list[list[Sample]]:
        """The next `num_samples` prompt groups."""

    @abstractmethod
    def add_samples(self, samples: list[list[Sample]]) -> None:
        """Take groups back (partial rollout recycles unfinished groups)."""

    @abstractmethod
    def save(self, rollout_id: int) -> None:
        """Persist the position as of `rollout_id`."""

    @abstractmethod
    def load(self, rollout_id: int | None = None) -> None:
        """Restore the position saved at `rollout_id` (the latest when None)."""

    @abstractmethod
    def __len__(self) -> int:
        """Prompts per epoch."""

    def state_dict(self) -> DataSourceState:
        """The position (and buffer) to commit. Optional: without it the source persists itself via save/load."""
        raise NotImplementedError

    def load_state_dict(self, state: DataSourceState) -> None:
        """Inverse of `state_dict`."""
        raise NotImplementedError


def persists_itself(source: Any) -> bool:
    """True for a data source written to slime's interface only: no `state_dict` of its own."""
    own = getattr(type(source), "state_dict", None)
    return own is None or own is DataSource.state_dict


def snapshot(source: Any, rollout_id: int) -> DataSourceState:
    """What to commit for `source` after `rollout_id`: its state_dict, or (slime interface) a marker after its own
    `save(rollout_id)`, which therefore happens before the commit that makes the rollout count."""
    if persists_itself(source):
        source.save(rollout_id)
        return DataSourceState(saved_by_source=True)
    return source.state_dict()


def restore(source: Any, state: DataSourceState, rollout_id: int) -> None:
    """Inverse of `snapshot`: load_state_dict, or the source's own `load(rollout_id)` of the last commit."""
    if persists_itself(source):
        source.load(rollout_id)
    else:
        source.load_state_dict(state)


class RolloutDataSource(DataSource):
    """Reads prompts in (optionally shuffled) epochs; each prompt becomes a group of samples."""

    def __init__(self, args: Any, *, state_store: StateStore | None = None) -> None:
        self.args = args
        self.epoch_id = 0
        self.sample_group_index = 0
        self.sample_index = 0
        self.sample_offset = 0
        self.metadata: dict[str, Any] = {}
        self._state_store = state_store
        self.dataset: Dataset | None = None
        if args.rollout_global_dataset and args.prompt_data:
            tokenizer = load_tokenizer(args.hf_checkpoint) if args.hf_checkpoint else None
            processor = load_processor(args.hf_checkpoint) if args.hf_checkpoint and args.multimodal_keys else None
            self.dataset = Dataset(
                args.prompt_data,
                tokenizer,
                args.rollout_max_prompt_len,
                prompt_key=args.input_key,
                label_key=args.label_key,
                tool_key=args.tool_key,
                metadata_key=args.metadata_key,
                seed=args.rollout_seed,
                apply_chat_template=args.apply_chat_template,
                apply_chat_template_kwargs=args.apply_chat_template_kwargs,
                processor=processor,
                multimodal_keys=args.multimodal_keys,
            )
            if args.rollout_shuffle:
                self.dataset.shuffle(self.epoch_id)

    @property
    def state_store(self) -> StateStore:
        if self._state_store is None:
            self._state_store = open_state_store(self.args)
        return self._state_store

    # ------------------------------------------------------------------ sampling
    def get_samples(self, num_samples: int) -> list[list[Sample]]:
        """The next `num_samples` prompt groups, wrapping into new epochs as needed."""
        if self.dataset is None:
            raise ValueError("no prompt dataset: set prompt_data (dataset.path) to a .jsonl or .parquet file")
        prompts: list[Sample] = []
        while len(prompts) < num_samples:
            if self.sample_offset >= len(self.dataset):
                self.epoch_id += 1
                self.sample_offset = 0
                if self.args.rollout_shuffle:
                    self.dataset.shuffle(self.epoch_id)
            take = min(num_samples - len(prompts), len(self.dataset) - self.sample_offset)
            prompts.extend(self.dataset.samples[self.sample_offset:self.sample_offset + take])
            self.sample_offset += take
        n = self.args.n_samples_per_prompt
        groups = []
        for prompt in prompts:
            group = []
            for _ in range(n):
                sample = _copy_prompt(prompt)
                sample.group_index = self.sample_group_index
                sample.index = self.sample_index
                self.sample_index += 1
                group.append(sample)
            self.sample_group_index += 1
            groups.append(group)
        return groups

    def add_samples(self, samples: list[list[Sample]]) -> None:
        raise RuntimeError(f"{type(self).__name__} is read-only; use RolloutDataSourceWithBuffer to recycle groups")

    def __len__(self) -> int:
        return len(self.dataset) if self.dataset is not None else 0

    # ------------------------------------------------------------------ state
    def state_dict(self) -> DataSourceState:
        return DataSourceState(
            epoch_id=self.epoch_id,
            sample_offset=self.sample_offset,
            sample_group_index=self.sample_group_index,
            sample_index=self.sample_index,
            metadata=copy.deepcopy(self.metadata),
        )

    def load_state_dict(self, state: DataSourceState) -> None:
        self.epoch_id = state.epoch_id
        self.sample_offset = state.sample_offset
        self.sample_group_index = state.sample_group_index
        self.sample_index = state.sample_index
        self.metadata = dict(state.metadata)
        if self.dataset is not None and self.args.rollout_shuffle:
            self.dataset.shuffle(self.epoch_id)

    def save(self, rollout_id: int) -> None:
        """Commit the position (and buffer) as of `rollout_id` to the state store."""
        current, version = self.state_store.read()
        base = current or RolloutState()
        self.state_store.commit(base.model_copy(update={"rollout_id": rollout_id, "data_source": self.state_dict()}).stamp(),
                                version)

    def load(self, rollout_id: int | None = None) -> None:
        """Restore from the store: the snapshot of `rollout_id` where the store keeps one, else the latest."""
        state = None
        if rollout_id is not None and hasattr(self.state_store, "read_snapshot"):
            state = self.state_store.read_snapshot(rollout_id)
        if state is None:
            state, _ = self.state_store.read()
            if state is not None and rollout_id is not None and state.rollout_id != rollout_id:
                log.warning("no saved state for rollout %s; using the last commit (rollout %s)", rollout_id, state.rollout_id)
        if state is None:
            log.info("no saved data source state; starting from the beginning")
            return
        self.load_state_dict(state.data_source)


class RolloutDataSourceWithBuffer(RolloutDataSource):
    """Adds the buffer of recycled (partial-rollout) groups, served first through the buffer filter."""

    def __init__(self, args: Any, *, state_store: StateStore | None = None) -> None:
        super().__init__(args, state_store=state_store)
        self.buffer: list[list[Sample]] = []
        self.buffer_filter = load_function(args.buffer_filter_path) if args.buffer_filter_path else pop_first

    def get_samples(self, num_samples: int) -> list[list[Sample]]:
        groups: list[list[Sample]] = []
        if self.buffer:
            groups = list(self.buffer_filter(self.args, None, self.buffer, num_samples))
            if len(groups) > num_samples:
                raise ValueError(f"buffer filter {self.args.buffer_filter_path} returned {len(groups)} groups for {num_samples}")
        if len(groups) < num_samples:
            groups.extend(super().get_samples(num_samples - len(groups)))
        return groups

    def add_samples(self, samples: list[list[Sample]]) -> None:
        if not samples:
            return
        if not isinstance(samples, list) or not all(isinstance(g, list) for g in samples):
            raise TypeError("add_samples takes a list of groups (list[list[Sample]])")
        n = self.args.n_samples_per_prompt
        for group in samples:
            if len(group) != n:
                raise ValueError(f"add_samples: a group has {len(group)} samples, expected n_samples_per_prompt={n}")
            self.buffer.append(group)

    def get_buffer_length(self) -> int:
        return len(self.buffer)

    def update_metadata(self, metadata: dict[str, Any]) -> None:
        self.metadata.update(metadata)

    def get_metadata(self) -> dict[str, Any]:
        return self.metadata

    def state_dict(self) -> DataSourceState:
        state = super().state_dict()
        state.buffer = [[_member_to_dict(m) for m in g] for g in self.buffer] or None
        return state

    def load_state_dict(self, state: DataSourceState) -> None:
        super().load_state_dict(state)
        self.buffer = [[_member_from_dict(d) for d in g] for g in (state.buffer or [])]


def pop_first(args: Any, rollout_id: int | None, buffer: list[list[Sample]], num_samples: int) -> list[list[Sample]]:
    """Default buffer filter: FIFO. Removes what it returns from `buffer`, as filters must."""
    n = min(len(buffer), num_samples)
    out = buffer[:n]
    del buffer[:n]
    return out


def _member_to_dict(member: Sample | list[Sample]) -> dict[str, Any] | list[dict[str, Any]]:
    """A group member as JSON: a sample's dict, or the list of dicts of a finished fan-out."""
    return [s.to_dict() for s in member] if isinstance(member, list) else member.to_dict()


def _member_from_dict(data: dict[str, Any] | list[dict[str, Any]]) -> Sample | list[Sample]:
    return [Sample.from_dict(d) for d in data] if isinstance(data, list) else Sample.from_dict(data)


def _copy_prompt(prompt: Sample) -> Sample:
    """A fresh sample for one group member; cheaper than deepcopy, same isolation for mutable fields."""
    return Sample(
        prompt=copy.deepcopy(prompt.prompt) if isinstance(prompt.prompt, list) else prompt.prompt,
        label=copy.deepcopy(prompt.label),
        metadata=copy.deepcopy(prompt.metadata),
        apply_chat_template_kwargs=dict(prompt.apply_chat_template_kwargs),
        multimodal_inputs=copy.deepcopy(prompt.multimodal_inputs),
    )
