"""Types for what a request may carry, as strict as the database and the wire need.

- :data:`Bool`: JSON ``true``/``false`` only — ``0``, ``1``, ``"yes"`` are refused (pydantic's lax
  mode would take them, and ``do_load_balancing: 0`` would quietly mean false).
- :data:`Int`: a JSON integer only (no ``"5"``, ``5.0`` or ``true``).
- :data:`DB_INT_MAX`: the largest value an ``INTEGER`` column holds on every state database we
  support (PostgreSQL and SQL Server ``int`` are 32-bit), so an id or count beyond it is a 422,
  never an overflow in the driver (a 500).
- :data:`DbId`: a row id (1 … :data:`DB_INT_MAX`); :data:`Count`: 0 … :data:`DB_INT_MAX`.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, StrictBool, StrictInt

DB_INT_MAX = 2**31 - 1

Bool = StrictBool
Int = StrictInt
DbId = Annotated[StrictInt, Field(ge=1, le=DB_INT_MAX)]
Count = Annotated[StrictInt, Field(ge=0, le=DB_INT_MAX)]
Port = Annotated[StrictInt, Field(ge=1, le=65535)]
