"""A data source written to slime's DataSource interface: no state_dict, its own save/load."""

import json
import os

from slime.rollout.data_source import DataSource
from slime.utils.types import Sample


class CountingDataSource(DataSource):
    """Prompts "What is i+i?" for i = 0, 1, 2, ...; persists its counter under args.save."""

    def __init__(self, args):
        self.args = args
        self.next_i = 0
        self.sample_index = 0

    def get_samples(self, num_samples):
        groups = []
        for _ in range(num_samples):
            i = self.next_i
            self.next_i += 1
            group = []
            for _ in range(self.args.n_samples_per_prompt):
                group.append(Sample(group_index=i, index=self.sample_index, prompt=f"What is {i}+{i}?",
                                    label=str(2 * i)))
                self.sample_index += 1
            groups.append(group)
        return groups

    def add_samples(self, samples):
        raise RuntimeError("read-only")

    def _path(self, root, rollout_id):
        return os.path.join(root, "rollout", f"counting_{rollout_id}.json")

    def save(self, rollout_id):
        path = self._path(self.args.save, rollout_id)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as fh:
            json.dump({"next_i": self.next_i, "sample_index": self.sample_index}, fh)

    def load(self, rollout_id=None):
        path = self._path(self.args.load, rollout_id)
        if os.path.exists(path):
            with open(path) as fh:
                state = json.load(fh)
            self.next_i, self.sample_index = state["next_i"], state["sample_index"]

    def __len__(self):
        return 1000
