"""From names and files to a validated :class:`~trainkit.recipe.Recipe`.

A recipe is resolved from layers, later layers winning:

1. the recipe itself: ``recipes/NAME.py`` whose ``recipe()`` returns a Recipe or a
   dict (the module may register its own components), or a YAML file holding a
   whole recipe;
2. YAML configs (``-c FILE``), each a partial recipe; a config may say which
   recipe it is for with ``base: NAME``;
3. overrides ``key=value`` by dotted path (``trainer.epochs=3``,
   ``model.layers.0.units=64``), the value read as a YAML scalar or flow list.

Dicts merge key by key; lists and scalars are replaced; a dict whose ``type``
changes is replaced whole (its old arguments belong to another component).
Every leaf remembers the layer that set it, so an error names the file.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import UnionType
from typing import Any, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError

from trainkit.errors import ConfigError, as_list, did_you_mean, first_line
from trainkit.recipe import Recipe

Path_ = tuple[str | int, ...]


# ------------------------------------------------------------------ where recipes live


def search_roots() -> list[Path]:
    """Directories holding ``recipes/`` and ``configs/``: ``$TRAINKIT_HOME`` (if set),
    the working directory, and the checkout trainkit was installed from."""
    roots = []
    if os.environ.get("TRAINKIT_HOME"):
        roots.append(Path(os.environ["TRAINKIT_HOME"]))
    roots.append(Path.cwd())
    roots.append(Path(__file__).resolve().parent.parent)
    unique: list[Path] = []
    for root in roots:
        if root.resolve() not in [u.resolve() for u in unique]:
            unique.append(root)
    return unique


def _every_file() -> list[Path]:
    """Every recipe and config file in search order: the first of a name wins."""
    files = []
    for root in search_roots():
        for sub, pattern in (("recipes", "*.py"), ("configs", "*.yaml"), ("configs", "*.yml")):
            files.extend(p for p in sorted((root / sub).glob(pattern)) if not p.name.startswith("_"))
    return files


def available() -> dict[str, Path]:
    """Every recipe (``recipes/*.py``) and config (``configs/*.yaml``) by name."""
    found: dict[str, Path] = {}
    for path in _every_file():
        found.setdefault(path.stem, path)
    return found


def shadowed(name: str, by: Path) -> Path | None:
    """The file of ``name`` that ``by``, the first of that name, hides: the next one in
    search order. A config ``configs/digits_cnn.yaml`` in the working directory with
    ``base: digits_cnn`` builds on the recipe it shadows, not on itself."""
    return next((p for p in _every_file() if p.stem == name and p.resolve() != by.resolve()), None)


def find(name_or_path: str | os.PathLike) -> Path:
    """The file a RECIPE argument names: a path, a recipe name or a config name."""
    text = str(name_or_path)
    path = Path(text)
    if path.suffix in (".py", ".yaml", ".yml") or os.sep in text:
        if path.is_file():
            return path
        raise ConfigError(f"recipe file not found: {text}")
    known = available()
    if text in known:
        return known[text]
    raise ConfigError(
        f"no recipe or config named '{text}' in {', '.join(str(r / 'recipes') for r in search_roots()[:2])}; "
        f"{did_you_mean(text, known)}"
    )


def describe(path: Path) -> str:
    """A recipe's or config's one-line description, read without running it."""
    if path.suffix == ".py":
        import ast

        try:
            doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
        except (SyntaxError, UnicodeDecodeError, ValueError) as err:
            return f"(unreadable: {type(err).__name__})"
    else:
        try:
            data = _read_yaml(path)
        except ConfigError as err:
            return f"(unreadable: {err})"
        doc = str(data.get("description", "")) if isinstance(data, dict) else ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


# --------------------------------------------------------------------------- reading


class _StrictSafeLoader(yaml.SafeLoader):
    """SafeLoader that also refuses duplicate keys (a silent last-one-wins is a trap)."""


_MERGE_TAG = "tag:yaml.org,2002:merge"


def _mapping_without_duplicates(loader: _StrictSafeLoader, node: yaml.MappingNode) -> dict:
    seen = set()
    for key_node, _ in node.value:
        if key_node.tag == _MERGE_TAG:  # ``<<: *defaults``: merged by construct_mapping, own keys win
            continue
        key = loader.construct_object(key_node)
        if not isinstance(key, str | int | float | bool) and key is not None:
            raise yaml.constructor.ConstructorError(
                None, None, f"a key must be text or a number, not a {type(key).__name__}", key_node.start_mark
            )
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key '{_shown(key)}'", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node)


#: The longest integer a recipe needs is a seed or a step count; Python refuses to
#: parse more than 4,300 digits anyway (with a ValueError, not a YAML error).
MAX_INT_DIGITS = 40


def _bounded_int(loader: _StrictSafeLoader, node: yaml.ScalarNode) -> int:
    digits = sum(ch.isdigit() for ch in node.value)
    if digits > MAX_INT_DIGITS:
        raise yaml.constructor.ConstructorError(
            None, None, f"an integer of {digits:,} digits; a recipe's numbers have at most {MAX_INT_DIGITS}", node.start_mark
        )
    return loader.construct_yaml_int(node)


_StrictSafeLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates
)
_StrictSafeLoader.add_constructor("tag:yaml.org,2002:int", _bounded_int)


def _code_point(character: int | str) -> int:
    return character if isinstance(character, int) else ord(character[:1] or "\0")


def _shown(value: Any, limit: int = 60) -> str:
    """``value`` as text for an error line: unprintable characters escaped, long text cut."""
    text = str(value)
    escaped = text.encode("unicode_escape").decode("ascii") if not text.isprintable() else text
    return escaped if len(escaped) <= limit else f"{escaped[:limit]}... ({len(text):,} characters)"


def _read_yaml(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"cannot read {path}: {err.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"cannot read {path}: it is not UTF-8 text") from None
    return parse_yaml(text, source=str(path))


#: Bounds on YAML input. A recipe or config is a few hundred values; these are
#: far above that and far below what an alias bomb or deeply nested input needs
#: to exhaust memory or the stack (PyYAML composes and constructs recursively).
MAX_YAML_BYTES = 1 << 20
MAX_YAML_DEPTH = 64
MAX_YAML_VALUES = 100_000
"""Values after expanding aliases: nine levels of nine ``*a`` already make 387 million."""


def parse_yaml(text: str, *, source: str) -> Any:
    """Safe YAML: plain data only; a tag that would build a Python object is an error.

    Input is bounded before it is built (size, nesting depth, values with aliases
    expanded), so a hostile file is refused on one line at once, never built.
    """
    if len(text) > MAX_YAML_BYTES:
        raise ConfigError(
            f"{source}: {len(text):,} characters of YAML, more than the {MAX_YAML_BYTES:,} a recipe or config may have"
        )
    loader = None
    try:
        loader = _StrictSafeLoader(text)  # its reader refuses NUL and other control characters
        _check_depth(text, source)
        node = loader.get_single_node()
        if node is None:
            return None
        _check_expanded_size(node, source)
        return loader.construct_document(node)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f"{source}, line {mark.line + 1}" if mark else source
        problem = err.problem or str(err)
        if isinstance(err, yaml.constructor.ConstructorError) and "tag" in problem:
            problem = f"{problem} (YAML here is plain data: tags that build Python objects are refused)"
        raise ConfigError(f"YAML error in {where}: {problem}") from None
    except yaml.reader.ReaderError as err:
        raise ConfigError(
            f"YAML error in {source}: the character U+{_code_point(err.character):04X} at position {err.position} "
            "is not allowed in YAML text (a NUL or control character: is it a binary file?)"
        ) from None
    except yaml.YAMLError as err:
        raise ConfigError(f"YAML error in {source}: {first_line(err)}") from None
    finally:
        if loader is not None:
            loader.dispose()


def _check_depth(text: str, source: str) -> None:
    """Refuse nesting deeper than :data:`MAX_YAML_DEPTH`, from the token stream (not recursive)."""
    opening = (yaml.BlockMappingStartToken, yaml.BlockSequenceStartToken, yaml.FlowMappingStartToken, yaml.FlowSequenceStartToken)
    closing = (yaml.BlockEndToken, yaml.FlowMappingEndToken, yaml.FlowSequenceEndToken)
    depth = 0
    for token in yaml.scan(text, Loader=yaml.SafeLoader):
        if isinstance(token, opening):
            depth += 1
            if depth > MAX_YAML_DEPTH:
                raise ConfigError(
                    f"YAML error in {source}, line {token.start_mark.line + 1}: nested more than "
                    f"{MAX_YAML_DEPTH} levels deep; a recipe or config is never that deep"
                )
        elif isinstance(token, closing):
            depth -= 1


def _check_expanded_size(root: yaml.Node, source: str) -> None:
    """Refuse a document whose aliases expand to more than :data:`MAX_YAML_VALUES` values."""
    sizes: dict[int, int] = {}
    in_progress: set[int] = set()
    shared = [False]  # a node reached twice: the document uses aliases

    def size(node: yaml.Node) -> int:
        key = id(node)
        if key in sizes:
            shared[0] = True
            return sizes[key]
        if key in in_progress:
            raise ConfigError(f"YAML error in {source}, line {node.start_mark.line + 1}: an alias refers to itself")
        in_progress.add(key)
        total = 1
        if isinstance(node, yaml.SequenceNode):
            total += sum(size(child) for child in node.value)
        elif isinstance(node, yaml.MappingNode):
            total += sum(size(k) + size(v) for k, v in node.value)
        in_progress.discard(key)
        if total > MAX_YAML_VALUES:
            if not shared[0]:
                raise ConfigError(
                    f"YAML error in {source}: more than {MAX_YAML_VALUES:,} values; a recipe or config never holds that many"
                )
            raise ConfigError(
                f"YAML error in {source}: its aliases (*name) expand to more than {MAX_YAML_VALUES:,} values; "
                "a recipe or config never needs that many (an alias bomb?)"
            )
        sizes[key] = total
        return total

    size(root)


def _kind(data: Any) -> str:
    return "an empty file" if data is None else f"a {type(data).__name__}"


def _import_recipe_module(path: Path) -> Any:
    module_name = f"trainkit_recipe_{path.stem}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    from trainkit.startup import startup_noise_filtered

    try:
        with startup_noise_filtered():  # a recipe file that imports keras at the top
            spec.loader.exec_module(module)
    except Exception as err:  # a user's recipe file: report where, in one line
        raise ConfigError(f"{path}: failed to load: {_where_in(path, err)}") from err
    return module


def import_recipe_file(path: str | os.PathLike, *, option: str) -> Any:
    """Import a Python recipe the user named (``option`` says where), registering its components.

    ``path`` is a ``.py`` file or, as ``trainkit train`` takes it, a recipe's name.
    """
    text = str(path)
    path = Path(text)
    if path.suffix != ".py" and os.sep not in text and text in available():
        path = available()[text]
    if path.suffix != ".py" or not path.is_file():
        raise ConfigError(
            f"{option} {text}: not a Python recipe file (.py) or recipe name; name the recipe the run was trained from"
        )
    return _import_recipe_module(path)


def _where_in(path: Path, err: BaseException) -> str:
    line = getattr(err, "lineno", None) if isinstance(err, SyntaxError) else None
    if line is None:
        for frame in reversed(traceback.extract_tb(err.__traceback__)):
            if Path(frame.filename).resolve() == path.resolve():
                line = frame.lineno
                break
    at = f"line {line}: " if line else ""
    return f"{at}{type(err).__name__}: {err}"


def _recipe_from_python(path: Path) -> dict:
    module = _import_recipe_module(path)
    build = getattr(module, "recipe", None)
    if not callable(build):
        raise ConfigError(f"{path}: a recipe file must define a function recipe() returning a Recipe")
    try:
        value = build()
    except ConfigError:
        raise
    except Exception as err:
        raise ConfigError(f"{path}: recipe() failed: {_where_in(path, err)}") from err
    if isinstance(value, Recipe):
        return value.to_dict()
    if isinstance(value, Mapping):
        data = dict(value)
        if not data.get("description") and module.__doc__:
            data["description"] = module.__doc__.strip().splitlines()[0]
        return data
    raise ConfigError(f"{path}: recipe() must return a Recipe or a dict, got {type(value).__name__}")


# --------------------------------------------------------------------------- layering


@dataclass
class Layered:
    """A recipe's raw data with, for each path, the source that set it."""

    data: dict = field(default_factory=dict)
    origin: dict[Path_, tuple[int, str]] = field(default_factory=dict)
    """For each path set, (when it was set, the source that set it)."""
    files: list[str] = field(default_factory=list)
    recipe_path: Path | None = None
    """The Python recipe at the bottom of the layers, if any."""
    config_name: str | None = None
    """The last config layer's name, unless ``name`` was set since (Recipe.run_name)."""

    @property
    def recipe_name(self) -> str | None:
        return self.recipe_path.stem if self.recipe_path else None

    def merge(self, new: Mapping, source: str) -> None:
        self.data = self._merge(self.data, new, (), source)

    def _merge(self, base: Any, new: Any, path: Path_, source: str) -> Any:
        if isinstance(base, dict) and isinstance(new, Mapping):
            replaces_type = "type" in new and "type" in base and new["type"] != base["type"]
            if not replaces_type:
                out = dict(base)
                for key, value in new.items():
                    out[key] = self._merge(base.get(key), value, (*path, key), source)
                return out
        self._mark(path, new, source)
        return _plain(new)

    def _mark(self, path: Path_, value: Any, source: str) -> None:
        for known in [p for p in self.origin if p[: len(path)] == path]:
            del self.origin[known]
        self.origin[path] = (len(self.origin) and max(o for o, _ in self.origin.values()) + 1, source)
        if isinstance(value, Mapping):
            for key, sub in value.items():
                self._mark((*path, key), sub, source)

    def set_path(self, dotted: str, value: Any, source: str) -> None:
        """Apply one override ``a.b.0.c=value``."""
        source = _shown(source, 120)
        # Only ASCII digits index a list: str.isdigit() also takes '²' (which int() refuses).
        keys = [int(k) if k.isascii() and k.isdigit() and len(k) <= 9 else k for k in dotted.split(".")]
        if not dotted or any(k == "" for k in keys):
            raise ConfigError(f"override '{_shown(dotted)}' ({source}): the key is empty")
        node = self.data
        for depth, key in enumerate(keys[:-1]):
            here = _shown(".".join(map(str, keys[: depth + 1])))
            if isinstance(node, list):
                _check_index(node, key, here, source)
                node = node[key]
            elif isinstance(node, dict):
                node = node.setdefault(key, {})
                if node is None:
                    node = self._set_child(keys[: depth + 1], {})
                elif isinstance(node, str):  # a component by name ("adam"): now with arguments
                    node = self._set_child(keys[: depth + 1], {"type": node})
            else:
                raise ConfigError(f"{here} ({source}): cannot set a key inside a {type(node).__name__}")
        last = keys[-1]
        if not isinstance(node, dict | list):
            parent = _shown(".".join(map(str, keys[:-1])))
            raise ConfigError(
                f"{_shown(dotted)} ({source}): {parent} is a single value ({type(node).__name__}), not a section; "
                f"set {parent}=VALUE itself"
            )
        if last == "type" and isinstance(node, dict) and node.get("type") not in (None, value) and len(keys) > 1:
            # A new component type: the old one's arguments do not apply to it.
            for key in [k for k in node if k != "type"]:
                del node[key]
                self.origin.pop((*keys[:-1], key), None)
        if isinstance(node, list):
            _check_index(node, last, _shown(dotted), source)
        node[last] = _plain(value)
        self._mark(tuple(keys), value, source)
        if keys == ["name"]:
            self.config_name = None  # a name given explicitly names the run too

    def _set_child(self, keys: list, value: Any) -> Any:
        node = self.data
        for key in keys[:-1]:
            node = node[key]
        node[keys[-1]] = value
        return value

    def source_of(self, loc: Sequence[str | int]) -> str:
        """The source that most likely caused an error at ``loc``: the latest layer
        that set ``loc``, an enclosing section, or (for a section-level error)
        anything inside it."""
        loc = tuple(loc)
        candidates = [v for p, v in self.origin.items() if p[: len(loc)] == loc]
        for n in range(len(loc), -1, -1):
            if loc[:n] in self.origin:
                candidates.append(self.origin[loc[:n]])
                break
        if candidates:
            return max(candidates)[1]
        return self.files[0] if self.files else "the recipe"


def _check_index(node: list, key: str | int, here: str, source: str) -> None:
    if not isinstance(key, int):
        raise ConfigError(
            f"{here} ({source}): this is a list; index it with a number 0..{len(node) - 1} (ASCII digits)"
            if node else f"{here} ({source}): this is an empty list; set the whole list instead"
        )
    if key >= len(node):
        raise ConfigError(f"{here} ({source}): index out of range (the list has {len(node)} items)")


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def parse_override(text: str) -> tuple[str, Any]:
    """``"trainer.epochs=3"`` -> ``("trainer.epochs", 3)``; values are YAML scalars."""
    if "=" not in text:
        raise ConfigError(f"override '{_shown(text)}' must look like key=value (for example trainer.epochs=3)")
    key, raw = text.split("=", 1)
    value = parse_yaml(raw, source=f"override '{_shown(text)}'") if raw.strip() else ""
    return key.strip(), value


# --------------------------------------------------------------------------- loading


def load_recipe(
    name_or_path: str | os.PathLike | Recipe | Mapping,
    *,
    configs: Sequence[str | os.PathLike] = (),
    overrides: Mapping[str, Any] | Sequence[str] | None = None,
) -> Recipe:
    """Resolve a recipe from its name or file, YAML configs and overrides.

    >>> import trainkit
    >>> r = trainkit.load_recipe("digits_mlp", overrides={"trainer.epochs": 1})
    >>> r.trainer.epochs
    1

    Raises :class:`~trainkit.errors.ConfigError` with one line naming the field
    and the file for anything invalid.
    """
    layered = Layered()
    if isinstance(name_or_path, Recipe):
        layered.files.append("the Recipe object")
        layered.merge(name_or_path.to_dict(), "the Recipe object")
        layered.config_name = name_or_path._config_name
    elif isinstance(name_or_path, Mapping):
        layered.files.append("the recipe dict")
        layered.merge(name_or_path, "the recipe dict")
    elif isinstance(name_or_path, str | os.PathLike):
        _load_file(layered, find(name_or_path))
    else:
        raise ConfigError(
            f"recipe: give a recipe name, a .py or YAML file, a Recipe or a dict, got {type(name_or_path).__name__}"
        )
    for config in as_list(configs, "configs"):
        path = find(config)
        if path.suffix == ".py":
            raise ConfigError(f"-c {config}: a config must be a YAML file, not a Python recipe")
        _apply_config(layered, path, base_expected=layered.recipe_name)
    if isinstance(overrides, Mapping):
        items = [(key, value, f"override {key}={value!r}") for key, value in overrides.items()]
    else:
        texts = as_list(overrides, "overrides")
        if not all(isinstance(text, str) for text in texts):
            raise ConfigError(f"overrides: give KEY=VALUE texts or a mapping, got {_shown(repr(texts), 120)}")
        items = [(*parse_override(text), f"override {_shown(text, 120)}") for text in texts]
    for key, value, source in items:
        layered.set_path(key, value, source)
    return validate(layered)


#: Configs built on configs, at most this deep: far more than a real chain, and a
#: bound before Python's recursion limit.
MAX_BASE_DEPTH = 32


def _check_chain(path: Path, chain: tuple[Path, ...]) -> None:
    """Refuse a chain of ``base:`` that loops or has grown past :data:`MAX_BASE_DEPTH`."""
    if path.resolve() in chain:
        loop = " -> ".join(p.name for p in (*chain, path.resolve()))
        raise ConfigError(f"base ({chain[-1]}): the configs name each other as base in a loop: {loop}")
    if len(chain) > MAX_BASE_DEPTH:
        raise ConfigError(
            f"base ({chain[-1]}): configs built on configs more than {MAX_BASE_DEPTH} deep "
            f"({chain[0].name} -> {chain[1].name} -> ... -> {path.name}); build on the recipe or a config nearer to it"
        )


def _load_file(layered: Layered, path: Path, chain: tuple[Path, ...] = ()) -> None:
    _check_chain(path, chain)
    if path.suffix == ".py":
        layered.files.append(str(path))
        layered.merge(_recipe_from_python(path), str(path))
        layered.recipe_path = path.resolve()
        return
    data = _read_yaml(path)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config must be a mapping of recipe keys, got {_kind(data)}")
    base = data.get("base")
    if base is None:  # a whole recipe in YAML
        layered.files.append(str(path))
        layered.merge(data, str(path))
        return
    base_path = _base_recipe(base, path)
    if base_path.resolve() == path.resolve():
        raise ConfigError(f"base ({path}): a config cannot be its own base")
    _load_file(layered, base_path, (*chain, path.resolve()))
    _apply_config(layered, path, base_expected=None, data=data)


def _base_recipe(base: Any, path: Path) -> Path:
    """The recipe a config's ``base:`` names: a name in the recipe search path, never a file
    path (a YAML file never imports code; the user names a ``.py`` file on the command line)."""
    how = f"to build on a file deliberately, name it on the command line: trainkit train FILE.py -c {path}"
    if not isinstance(base, str):
        raise ConfigError(f"base ({path}): must be a recipe name (see trainkit ls), got {_shown(repr(base))}")
    known = available()
    if base in known and known[base].resolve() == path.resolve():
        return shadowed(base, path) or path  # the caller refuses a config that is its own base
    if base not in known:
        if base.endswith((".py", ".yaml", ".yml")) or "/" in base or os.sep in base:
            raise ConfigError(f"base ({path}): '{_shown(base)}' is a path; base: names a recipe in recipes/ or configs/ (see trainkit ls); {how}")
        raise ConfigError(f"base ({path}): no recipe or config named '{_shown(base)}'; {did_you_mean(base, known)}")
    return known[base]


def _apply_config(
    layered: Layered, path: Path, *, base_expected: str | None, data: dict | None = None, chain: tuple[Path, ...] = ()
) -> None:
    """Merge the config at ``path`` as a layer; ``base_expected``: the recipe it must be
    for (``-c``), reached directly or through the configs it builds on, which are
    applied first."""
    _check_chain(path, chain)
    data = _read_yaml(path) if data is None else data
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config must be a mapping of recipe keys, got {_kind(data)}")
    data = dict(data)
    base = data.pop("base", None)
    if base_expected and base and Path(str(base)).stem != base_expected:
        base_path = _base_recipe(base, path)
        if base_path.suffix == ".py":
            where = f"{chain[0]}, through {path.name}" if chain else path
            raise ConfigError(f"base ({where}): this config is for recipe '{base}', not '{base_expected}'")
        _apply_config(layered, base_path, base_expected=base_expected, chain=(*chain, path.resolve()))
    layered.files.append(str(path))
    layered.merge(data, str(path))
    layered.config_name = None if "name" in data else path.stem


def validate(layered: Layered) -> Recipe:
    try:
        recipe = Recipe.model_validate(layered.data)
    except ValidationError as err:
        raise ConfigError(explain(err, layered)) from None
    recipe._source = str(layered.recipe_path) if layered.recipe_path else None
    recipe._config_name = layered.config_name
    recipe._origins = {".".join(map(str, path)): source for path, (_, source) in layered.origin.items()}
    return recipe


# ------------------------------------------------------------------ error messages


def explain(err: ValidationError, layered: Layered | None = None) -> str:
    """The first error of a pydantic ValidationError as one actionable line: a
    validator's own message first (of a union, the branch that says what is wrong
    with the value, not "Input should be 'all'" from the branch it is not), then an
    unknown key (``lr_mult``, not the ``learning_rate_multiplier`` it left missing)."""
    errors = err.errors(include_url=False)
    rank = {"value_error": 0, "extra_forbidden": 1}
    first = min(errors, key=lambda e: rank.get(e["type"], 2))  # (min keeps pydantic's order within a rank)
    loc, shown = _display_loc(first["loc"])
    where = f" (in {layered.source_of(loc)})" if layered else ""
    kind = first["type"]
    if kind == "extra_forbidden":
        parent, key = shown[:-1], shown[-1]
        valid = _fields_at(loc[:-1])
        hint = did_you_mean(str(key), valid) if valid else ""
        at = f" in {_dotted(parent)}" if parent else ""
        return f"unknown key '{_shown(key)}'{at}{where}; {hint}".rstrip("; ")
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        where = f" (in {layered.source_of([*loc, 'type'])})" if layered else ""
        ctx = first.get("ctx", {})
        tags = [t.strip(" '") for t in str(ctx.get("expected_tags", "")).split(",") if t.strip()]
        got = ctx.get("tag", first.get("input"))
        return f"{_dotted(shown)}.type{where}: unknown type {_shown(repr(got), 80)}; {did_you_mean(str(got), tags)}"
    if kind == "missing":
        return f"{_dotted(shown)}{where}: required field is missing"
    message = _either(errors, loc) or first["msg"].removeprefix("Value error, ")
    got = first.get("input")
    got_text = "" if isinstance(got, dict | list) or kind == "value_error" else f", got {_shown(repr(got), 80)}"
    return f"{_dotted(shown)}{where}: {message}{got_text}"


def _either(errors: list[dict[str, Any]], loc: list[Any]) -> str | None:
    """For a value that fits no branch of a union of scalars (``data.prefetch``: a
    boolean or a count), every branch's demand in one message, not only the first's."""
    wanted: list[str] = []
    for error in errors:
        if _display_loc(error["loc"])[0] != loc or error["type"] == "value_error":
            continue
        demand = error["msg"].removeprefix("Input should be ").split(", ")[0]  # (its reason: the branch's own)
        if demand not in wanted:
            wanted.append(demand)
    return "Input should be " + " or ".join(wanted) if len(wanted) > 1 else None


def _dotted(parts: Sequence[Any]) -> str:
    return _shown(".".join(str(p) for p in parts), 120) or "recipe"


def _display_loc(loc: Sequence[Any]) -> tuple[list[Any], list[Any]]:
    """Drop the discriminator tags pydantic puts in union locations."""
    real, shown = [], []
    annotation: Any = Recipe
    for part in loc:
        member = _union_member(annotation, part)
        if member is not None:
            annotation = member
            continue
        if isinstance(part, str) and _as_model(annotation) is None and len(get_args(annotation)) > 1:
            continue  # pydantic's label for a union branch ('constrained-int', 'literal[...]')
        real.append(part)
        shown.append(part)
        annotation = _child(annotation, part)
    return real, shown


def _fields_at(loc: Sequence[Any]) -> list[str]:
    annotation: Any = Recipe
    for part in loc:
        annotation = _child(annotation, part)
    model = _as_model(annotation)
    return list(model.model_fields) if model else []


def _child(annotation: Any, part: Any) -> Any:
    if get_origin(annotation) in (Union, UnionType):  # ``list[Stage] | None``: the member that has ``part``
        return next((c for c in (_child(a, part) for a in get_args(annotation)) if c is not None), None)
    model = _as_model(annotation)
    if model is not None and isinstance(part, str) and part in model.model_fields:
        return model.model_fields[part].annotation
    origin = get_origin(annotation)
    if origin in (list, Sequence) and isinstance(part, int):
        return get_args(annotation)[0]
    return None


def _union_member(annotation: Any, tag: Any) -> Any:
    for arg in _flatten(annotation):
        model = arg if isinstance(arg, type) and issubclass(arg, BaseModel) else None
        # A tagged union names its member by the ``type`` value; a plain one by the class name.
        named = model is not None and (
            ("type" in model.model_fields and model.model_fields["type"].default == tag) or model.__name__ == tag
        )
        if named and len(_flatten(annotation)) > 1:
            return model
    return None


def _flatten(annotation: Any) -> list[Any]:
    args = get_args(annotation)
    if not args:
        return [annotation]
    out = []
    for arg in args:
        out.extend(_flatten(arg))
    return out


def _as_model(annotation: Any) -> type[BaseModel] | None:
    for arg in _flatten(annotation):
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
    return None
