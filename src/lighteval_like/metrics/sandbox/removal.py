"""Removing what a program leaves on disk, as root, in a way the program cannot redirect.

Run only once no process of the program is left. Removal works through directory descriptors
opened with O_NOFOLLOW: a symlink is unlinked, never followed; no mode is changed (root reads
and searches folders whatever their mode); it is iterative, so any depth of folders is removed
with one descriptor open (going up through '..', checked against the folder it came from).
"""

from __future__ import annotations

import os
import stat

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _open_dir(name: str, dir_fd: int | None) -> int:
    return os.open(name, DIR_FLAGS, dir_fd=dir_fd)


def _identity(fd: int) -> tuple[int, int]:
    st = os.fstat(fd)
    return st.st_dev, st.st_ino


def _unlink_files(fd: int) -> str | None:
    """Unlink every entry of the folder at `fd` that is not a folder; the name of a subfolder, if any."""
    with os.scandir(fd) as entries:
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                return entry.name
            os.unlink(entry.name, dir_fd=fd)
    return None


def _remove_below(top: int, name: str) -> None:
    fd, names, ids = _open_dir(name, top), [name], []
    ids.append(_identity(fd))
    try:
        while True:
            sub = _unlink_files(fd)
            if sub is not None:
                child = _open_dir(sub, fd)
                os.close(fd)
                fd = child
                names.append(sub)
                ids.append(_identity(fd))
                continue
            if len(names) == 1:
                break
            parent = _open_dir("..", fd)
            os.close(fd)
            fd = parent
            ids.pop()
            if _identity(fd) != ids[-1]:
                raise OSError(0, "a folder moved during removal")
            os.rmdir(names.pop(), dir_fd=fd)
    finally:
        os.close(fd)
    os.rmdir(name, dir_fd=top)


def remove_tree(path: str) -> str:
    """Remove `path` (a folder, or anything else) and all below it; '' when done, else why not."""
    parent, name = os.path.split(os.path.abspath(path))
    try:
        top = _open_dir(parent, None)
    except OSError as e:
        return f"{parent}: {e.strerror}"
    try:
        st = os.stat(name, dir_fd=top, follow_symlinks=False)
        if stat.S_ISDIR(st.st_mode):
            _remove_below(top, name)
        else:
            os.unlink(name, dir_fd=top)
        return ""
    except FileNotFoundError:
        return ""
    except OSError as e:
        return f"{path}: {e.strerror or e}"
    finally:
        os.close(top)


def remove_owned(folders: list[str], uid: int) -> str:
    """Remove the entries that `uid` owns directly in each of `folders` (the world-writable ones a
    program at level none can write to); '' when done, else what was left."""
    errors = []
    for folder in folders:
        try:
            with os.scandir(folder) as entries:
                owned = [e.path for e in entries if e.stat(follow_symlinks=False).st_uid == uid]
        except OSError:
            continue
        errors += [e for e in map(remove_tree, owned) if e]
    return "; ".join(errors)
