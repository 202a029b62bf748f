"""kuberollout's rollout runtime: slime-compatible rollout generation against SGLang."""

__version__ = "0.1.0"
