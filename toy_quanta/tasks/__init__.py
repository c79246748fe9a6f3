"""Tasks: one module each, registered by name (toy_quanta.registry). Importing the package
registers the built-in ones, in this order (it is the order of their keys in metrics tables)."""

from toy_quanta.tasks import sparse_parity  # noqa: F401, I001  (registration, in this order)
from toy_quanta.tasks import modular, symbol_add, mnist, teacher_student  # noqa: F401
from toy_quanta.tasks import induction  # noqa: F401
