"""The steering methods, one package each; the registry discovers them (``pkgutil``).

A method package imports what it needs from the pipeline core (:mod:`steerlens.pipeline.roles`,
``selection``, ``contrastive``, ``gates``, ``selectors``, ``editors``, ``steerer``,
``registry``) and, when imported, registers itself:

- its methods: ``@register_method(name, help=..., family=..., contract={"params": {...},
  "gen_alpha": ...})`` (``contract`` builds it on the tiny random model for the contract suite);
- its roles: ``@register_role`` on each Selector / Gate / Editor class (artifacts name the kind);
- short role names for specs: ``register_role_alias("editor", "mose", {"kind": "mose"})``;
- spec defaults that depend on the paired editor: ``register_spec_defaults(kind, fn)``.

Nothing outside the package names it, so adding a method is adding a folder here (or anywhere,
with :func:`steerlens.pipeline.registry.register_package` / ``$STEERLENS_METHOD_PATH``).
This ``__init__`` imports nothing: the packages are imported by the registry when first read.
"""
