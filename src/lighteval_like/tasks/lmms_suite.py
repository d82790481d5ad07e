"""The `lmms` suite: every image benchmark (`lmms`, `lmms_mc`, `mmmu`) and its groups, `lmms|all`
(each benchmark once: POPE's three splits are `lmms|pope_full`)."""

from __future__ import annotations

from lighteval_like.tasks import lmms, lmms_mc, mmmu
from lighteval_like.tasks.config import TaskGroup

TASKS = [*lmms.TASKS, *lmms_mc.TASKS, *mmmu.TASKS]
GROUPS = [TaskGroup("lmms", "pope_full", tuple(f"lmms|{name}" for name in lmms.POPE_SPLITS)),
          TaskGroup("lmms", "all", tuple(f"lmms|{t.name}" for t in TASKS if t.name not in lmms.POPE_SPLITS))]
