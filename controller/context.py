"""What the controller's routes and background loops share, built once in ``create_app``."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncEngine

from config.aiotasks import TaskSupervisor
from config.crm_schema import CrmTables
from config.secrets import SecretBox
from config.settings import ControllerSettings
from config.sysparams import SysParamsStore
from controller.agent_client import AgentPool


@dataclass
class ControllerContext:
    settings: ControllerSettings
    state_engine: AsyncEngine
    crm_engine: AsyncEngine
    crm_tables: CrmTables
    sysparams: SysParamsStore
    agents: AgentPool
    box: SecretBox
    tasks: TaskSupervisor = field(default_factory=lambda: TaskSupervisor("controller"))
