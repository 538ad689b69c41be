"""A non-chief worker's run directory: a scratch copy only it writes.

Only the chief writes the run directory (:class:`~trainkit.distribution.cluster.Role`);
the other workers of a cluster still save checkpoints (saving reads variables
through collectives) and write their own metrics, into a scratch directory
that starts from the chief's checkpoints and is removed at the end.
"""

from __future__ import annotations

from trainkit.distribution.cluster import Role
from trainkit.recipe import Recipe
from trainkit.rundir import RunDir


def writable_run_dir(directory: RunDir, role_: Role) -> RunDir:
    """Where this process writes: the run directory on the chief, a scratch one elsewhere.

    The other workers must still save checkpoints (saving reads variables
    through collectives), and write their own metrics and TensorBoard events;
    they go to a temporary directory that :func:`remove_scratch` deletes.
    """
    if role_.is_chief:
        return directory
    import tempfile

    return RunDir(tempfile.mkdtemp(prefix=f"trainkit-{role_.name}-"))


def copy_checkpoints(shared: RunDir, scratch: RunDir) -> None:
    """Give a non-chief worker the chief's checkpoints to resume from.

    Every worker then runs the same restore (the same damaged checkpoints
    skipped, the same best value read back), so their later save decisions,
    which are collective under multi-worker strategies, stay in step. Files the
    chief moves aside while this copies are skipped: the chief skips them too.
    """
    import shutil

    source = shared.checkpoints
    if not source.is_dir():
        return
    for path in source.rglob("*"):
        relative = path.relative_to(source)
        if relative.parts[0] == "corrupt" or not path.is_file():
            continue
        target = scratch.checkpoints / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            shutil.copy2(path, target)
        except FileNotFoundError:
            continue


def remove_scratch(directory: RunDir, role_: Role) -> None:
    if not role_.is_chief:
        import shutil

        shutil.rmtree(directory.path, ignore_errors=True)


def quiet(recipe: Recipe) -> Recipe:
    """A non-chief worker's copy of the recipe: progress off (the chief reports)."""
    return recipe.model_copy(update={"trainer": recipe.trainer.model_copy(update={"progress": False})})
