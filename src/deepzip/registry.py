"""Registries: `Registry` (name -> object, e.g. models) and `METHODS`, the one table of method configs."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, ClassVar, Generic, Iterator, Sequence, TypeVar

from .validate import names

T = TypeVar("T")


class Registry(Generic[T]):
    """A name -> object table whose errors list the allowed names."""

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._items[name] = obj
            return obj

        return decorator

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise ValueError(f"unknown {self.kind} {name!r}; allowed: {', '.join(self._items)}") from None

    def names(self) -> list[str]:
        return list(self._items)

    def __contains__(self, name: str) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)


class MethodRegistry:
    """Every method of deepzip as a frozen config class, looked up by family and name, dispatched by type.

    A family is a kind of operation ('prune', 'quantize', ...). Its configs are registered with
    `register` (the name users type) and their implementations with `implements` (keyed by the config's
    type, torchao's ``quantize_(model, Config)`` shape). `build` turns a name and keyword options into a
    config, refusing options the config does not have with the list of those it has.
    """

    def __init__(self) -> None:
        self._configs: dict[str, dict[str, type]] = {}
        self._handlers: dict[type, Callable] = {}

    def register(self, family: str, name: str) -> Callable[[type], type]:
        def decorator(cls: type) -> type:
            names = self._configs.setdefault(family, {})
            if name in names:
                raise ValueError(f"{family} method {name!r} is already registered")
            names[name] = cls
            cls.method = name
            return cls

        return decorator

    def implements(self, cls: type) -> Callable[[Callable], Callable]:
        def decorator(fn: Callable) -> Callable:
            self._handlers[cls] = fn
            return fn

        return decorator

    def names(self, family: str) -> list[str]:
        return list(self._configs.get(family, {}))

    def config_class(self, family: str, name: str) -> type:
        names = self._configs.get(family, {})
        if not isinstance(name, str) or name not in names:
            raise ValueError(f"unknown {family} method {name!r}; allowed: {', '.join(names)}")
        return names[name]

    def build(self, family: str, name: str, **options: Any) -> Any:
        """The config of method ``name`` with ``options``; a misspelled or inapplicable option is a TypeError."""
        cls = self.config_class(family, name)
        allowed = [f.name for f in dataclasses.fields(cls)]
        unknown = [key for key in options if key not in allowed]
        if unknown:
            raise TypeError(f"{family} method {name!r} takes no option {', '.join(map(repr, unknown))}; "
                            f"its options: {', '.join(allowed) or '(none)'}")
        return cls(**options)

    def resolve(self, family: str, config: Any = None, method: str | None = None, *, shorthand: str,
                default: str, **options: Any) -> Any:
        """The config a call names: a config of ``family`` as is; otherwise ``method`` (or ``default``) built
        from keyword ``options``, where a plain value given as ``config`` stands for the field ``shorthand``
        (``prune(model, 0.9)`` means ``sparsity=0.9``)."""
        if self.family_of(config) is not None:
            if self.family_of(config) != family:
                raise TypeError(f"{type(config).__name__} is a {self.family_of(config)} method, not a {family} one")
            if method is not None or options:
                given = ["method"] * (method is not None) + list(options)
                raise TypeError(f"give a {family} config alone, with its options inside it (got also {', '.join(given)})")
            return config
        if method is not None and not isinstance(method, str):
            raise TypeError(f"method must be a {family} method name ({', '.join(self.names(family))}) or config, "
                            f"got {type(method).__name__}")
        if config is not None:
            if shorthand in options:
                raise TypeError(f"{shorthand} given twice (positionally and as a keyword)")
            options[shorthand] = config
        return self.build(family, method or default, **options)

    def handler(self, config: Any) -> Callable:
        """The implementation registered for ``type(config)`` (or its nearest registered base)."""
        for cls in type(config).__mro__:
            if cls in self._handlers:
                return self._handlers[cls]
        raise TypeError(f"{type(config).__name__} is not a registered deepzip method config")

    def family_of(self, config: Any) -> str | None:
        """The family ``config`` is a method config of, or None for anything else."""
        for family, names in self._configs.items():
            if isinstance(config, tuple(names.values())):
                return family
        return None


@dataclasses.dataclass(frozen=True)
class MethodConfig:
    """Base of every method config: which parameters are targets, checked when the config is made, then
    the method's own fields (`validate`). Frozen; subclasses add fields with the paper's defaults."""

    family: ClassVar[str] = ""
    method: ClassVar[str] = ""

    exclude: Sequence[str] | None = ()  # layer or parameter names left alone (None: the method's own choice)
    extra: Sequence[str] = ()  # parameters that are not the weight of a Linear / Conv / Embedding

    def __post_init__(self) -> None:
        if self.exclude is not None:
            self._set("exclude", names(self.exclude, "exclude"))
        self._set("extra", names(self.extra, "extra"))
        self.validate()

    def validate(self) -> None:
        """Check the method's own fields; raise ValueError / TypeError naming the field and what is allowed."""

    def _set(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)

    def _check(self, name: str, checker: Callable, *args: Any) -> None:
        self._set(name, checker(getattr(self, name), name, *args))


METHODS = MethodRegistry()
"""The one registry of method configs: pruning, quantization and every method added later."""
