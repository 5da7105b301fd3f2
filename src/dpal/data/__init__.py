"""Datasets: where they live, how they are read, and the named private/public/test splits."""

from dpal.data.arrays import ImageArrays
from dpal.data.registry import DATASETS, load_split
from dpal.data.tasks import TASKS, Task, load_task

__all__ = ["DATASETS", "TASKS", "ImageArrays", "Task", "load_split", "load_task"]
