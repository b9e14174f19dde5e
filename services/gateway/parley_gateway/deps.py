"""What handlers take, as typed FastAPI dependencies: `Annotated` aliases over the one
`Gateway` the app's lifespan builds (app.py), so no handler looks into `request.app.state`.

The user: `CurrentUser` resolves the API key to its user; `count_request`, a dependency of
every authenticated router, counts the request against the user's rate limit and leaves the
X-RateLimit-* and X-Budget-* headers for the response (ratelimit.RateLimitHeaders). FastAPI
resolves `current_user` once per request for both.

Every dependency is `async def`, though none awaits: FastAPI runs a plain `def` dependency in a
thread pool, a thread hop per dependency per request (8% of the gateway's CPU on short turns).
None uses `yield`: a stream's body is served after its request's handling has returned
(sse_response.DetachedStreams), so such a dependency's cleanup would run under an open stream.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, cast

from fastapi import Depends, Request

from parley_common.budgets.stream_slots import StreamSlots
from parley_common.budgets.users import UserBudgets
from parley_common.clients.history import HistoryClient
from parley_common.clients.media import MediaClient
from parley_common.messaging.replay import ReplayLog
from parley_common.models import ModelRegistry
from parley_common.service.ops_server import Readiness

from .auth import ApiKeys
from .ratelimit import RequestCounter
from .settings import GatewaySettings
from .turns.live import LiveStreams
from .turns.ownership import OwnedConversations
from .turns.responses import Responses
from .turns.start import Turns


@dataclass
class Gateway:
    """Everything the handlers use, built once by the app's lifespan."""

    settings: GatewaySettings
    registry: ModelRegistry
    api_keys: ApiKeys
    requests: RequestCounter
    history: HistoryClient
    media: MediaClient
    replay: ReplayLog
    slots: StreamSlots
    user_budgets: UserBudgets
    owned: OwnedConversations
    streams: LiveStreams
    turns: Turns
    responses: Responses
    readiness: Readiness
    # Set when the process was told to stop (GatewayServer).
    stopping: bool = False


async def gateway(request: Request) -> Gateway:
    return cast(Gateway, request.app.state.gateway)


GatewayDep = Annotated[Gateway, Depends(gateway)]


async def _settings(g: GatewayDep) -> GatewaySettings:
    return g.settings


async def _registry(g: GatewayDep) -> ModelRegistry:
    return g.registry


async def _history(g: GatewayDep) -> HistoryClient:
    return g.history


async def _media(g: GatewayDep) -> MediaClient:
    return g.media


async def _replay(g: GatewayDep) -> ReplayLog:
    return g.replay


async def _slots(g: GatewayDep) -> StreamSlots:
    return g.slots


async def _user_budgets(g: GatewayDep) -> UserBudgets:
    return g.user_budgets


async def _owned(g: GatewayDep) -> OwnedConversations:
    return g.owned


async def _turns(g: GatewayDep) -> Turns:
    return g.turns


async def _responses(g: GatewayDep) -> Responses:
    return g.responses


async def _readiness(g: GatewayDep) -> Readiness:
    return g.readiness


SettingsDep = Annotated[GatewaySettings, Depends(_settings)]
RegistryDep = Annotated[ModelRegistry, Depends(_registry)]
HistoryDep = Annotated[HistoryClient, Depends(_history)]
MediaDep = Annotated[MediaClient, Depends(_media)]
ReplayDep = Annotated[ReplayLog, Depends(_replay)]
SlotsDep = Annotated[StreamSlots, Depends(_slots)]
BudgetsDep = Annotated[UserBudgets, Depends(_user_budgets)]
OwnedDep = Annotated[OwnedConversations, Depends(_owned)]
TurnsDep = Annotated[Turns, Depends(_turns)]
ResponsesDep = Annotated[Responses, Depends(_responses)]
ReadinessDep = Annotated[Readiness, Depends(_readiness)]


async def current_user(request: Request, g: GatewayDep) -> str:
    """The authenticated user's id (401 without a valid API key)."""
    return g.api_keys.user_for(request.headers.get("authorization"))


CurrentUser = Annotated[str, Depends(current_user)]


async def count_request(request: Request, user: CurrentUser, g: GatewayDep) -> None:
    """Count the request against the user's rate limit (429 rate_limited past it) and keep the
    headers its response carries."""
    request.state.rate_limit = await g.requests.count(user)


# For `APIRouter(dependencies=...)`: every route of an authenticated router is counted.
RATE_LIMITED = [Depends(count_request)]
