"""A bridge written with mautrix-python's `AppService`, driven through the flow every mautrix
bridge performs, against the homeserver under test.

Run by tests/tests/blackbox/appservice_mautrix.rs with the venv of the `mautrix` row of
tests/host-tools.sh. Both sides of the bridge act here: the appservice (bot, ghost users,
transactions, queries) through mautrix's appservice API, and a human Matrix user through
mautrix's plain client API with an access token the Rust test registered.

Output: one JSON object per line on stdout, `{"step": NAME, "ok": BOOL, "detail": TEXT}` for
every step in STEPS order (a step that cannot run because an earlier one failed is reported
failed with the reason), then `{"done": true}`. Logs go to stderr. The Rust test asserts every
step; this script decides nothing about pass or fail of the test as a whole.
"""

import argparse
import asyncio
import json
import logging
import sys
import time

from mautrix.api import HTTPAPI, Method, Path
from mautrix.appservice import AppService
from mautrix.appservice.state_store import ASStateStore
from mautrix.client import ClientAPI
from mautrix.client.state_store.memory import MemoryStateStore
from mautrix.errors import MatrixRequestError
from mautrix.types import EventType, LoginType, MessageType, RoomCreatePreset, TextMessageEventContent

# How long one step may wait for the homeserver (a request, or an event to arrive).
STEP_DEADLINE = 30.0

STEPS = [
    "appservice listens",
    "register the bot (m.login.application_service)",
    "register the bot again: M_USER_IN_USE",
    "whoami as the bot",
    "register a ghost user",
    "whoami masquerading as the ghost",
    "ghost sets its displayname",
    "register outside the namespace: M_EXCLUSIVE",
    "masquerade as a user outside the namespace: 403",
    "human cannot register in the exclusive namespace: M_EXCLUSIVE",
    "human cannot create an alias in the exclusive namespace: M_EXCLUSIVE",
    "appservice ping",
    "encrypted bridge: log the bot in with m.login.application_service",
    "encrypted bridge (MSC4190): create a bot device with the as_token",
    "bot creates a portal room with an alias in its namespace",
    "ghost joins the portal",
    "bot reads the portal's create event (?format=event)",
    "human joins the portal by alias",
    "ghost sends a message with a massaged timestamp",
    "human reads the ghost's message",
    "transaction delivers the human's message",
    "ephemeral: the human's typing reaches the appservice",
    "alias query: joining an unknown alias in the namespace creates the portal",
    "user query: inviting an unknown ghost asks the appservice",
]


class MemoryBridgeStateStore(ASStateStore, MemoryStateStore):
    """mautrix's appservice state store, kept in memory (the default writes a file)."""

    def __init__(self) -> None:
        ASStateStore.__init__(self)
        MemoryStateStore.__init__(self)


class Report:
    """Prints each step's result once, in STEPS order."""

    def __init__(self) -> None:
        self.done = set()

    def step(self, name: str, ok: bool, detail: str = "") -> bool:
        assert name in STEPS, name
        self.done.add(name)
        print(json.dumps({"step": name, "ok": bool(ok), "detail": detail}), flush=True)
        return ok

    def finish(self, reason: str) -> None:
        for name in STEPS:
            if name not in self.done:
                self.step(name, False, f"not run: {reason}")
        print(json.dumps({"done": True}), flush=True)


def error_of(err: Exception) -> str:
    if isinstance(err, (asyncio.TimeoutError, TimeoutError)):
        return f"no result within {STEP_DEADLINE + 5}s"
    if isinstance(err, MatrixRequestError):
        if err.errcode is None:
            return f"{err.http_status} {getattr(err, 'text', '')[:300]}"
        return f"{err.http_status} {err.errcode} {err.message}"
    return f"{type(err).__name__}: {err}"


async def expect_error(coro, status: int, errcodes: tuple) -> tuple:
    """Runs `coro`, expecting a Matrix error with `status` and one of `errcodes`."""
    try:
        result = await asyncio.wait_for(coro, STEP_DEADLINE)
    except MatrixRequestError as err:
        ok = err.http_status == status and err.errcode in errcodes
        return ok, f"got {error_of(err)}"
    except Exception as err:  # noqa: BLE001  (reported as the step's failure)
        return False, f"got {error_of(err)}"
    return False, f"succeeded: {result!r}"


async def wait_for(predicate, what: str) -> tuple:
    """Polls `predicate` (a function) until it returns something truthy, or STEP_DEADLINE."""
    start = time.monotonic()
    while time.monotonic() - start < STEP_DEADLINE:
        value = predicate()
        if value:
            return True, f"after {time.monotonic() - start:.2f}s"
        await asyncio.sleep(0.05)
    return False, f"{what}: nothing within {STEP_DEADLINE}s"


async def run(args, report: Report) -> None:
    server = args.server_name
    bot_id = f"@{args.bot}:{server}"
    ghost_id = f"@{args.prefix}alice:{server}"
    queried_ghost = f"@{args.prefix}bob:{server}"
    portal_alias = f"#{args.prefix}portal:{server}"
    auto_alias = f"#{args.prefix}auto:{server}"

    received = []  # (kind, event) in arrival order, from transactions
    queried_users = []
    queried_aliases = []

    az = None

    # mautrix answers 404 when a query handler returns something falsy, `{}` included: the
    # handlers return a non-empty object for the 200 (the spec's body is an object).
    async def query_user(user_id):
        queried_users.append(user_id)
        if user_id != queried_ghost:
            return None
        await az.intent.user(user_id).ensure_registered()
        return {"created": user_id}

    async def query_alias(alias):
        queried_aliases.append(alias)
        if alias != auto_alias:
            return None
        await az.intent.create_room(alias_localpart=alias[1:].split(":", 1)[0], preset=RoomCreatePreset.PUBLIC)
        return {"created": alias}

    az = AppService(
        server=args.homeserver,
        domain=server,
        as_token=args.as_token,
        hs_token=args.hs_token,
        bot_localpart=args.bot,
        id=args.id,
        state_store=MemoryBridgeStateStore(),
        query_user=query_user,
        query_alias=query_alias,
        ephemeral_events=True,
    )

    @az.matrix_event_handler
    async def on_event(event) -> None:
        kind = "ephemeral" if str(event.type) in ("m.typing", "m.receipt", "m.presence") else "pdu"
        received.append((kind, event))

    human = ClientAPI(args.human, api=HTTPAPI(base_url=args.homeserver, token=args.human_token))
    anon = HTTPAPI(base_url=args.homeserver)

    try:
        await az.start(host="127.0.0.1", port=args.port)
    except Exception as err:  # noqa: BLE001
        report.step("appservice listens", False, error_of(err))
        return
    report.step("appservice listens", True, f"127.0.0.1:{args.port}")

    async def step(name, coro):
        """Runs one step that passes when `coro` returns (ok, detail) with ok true."""
        try:
            # Longer than the waits inside a step, which report what they waited for.
            ok, detail = await asyncio.wait_for(coro, STEP_DEADLINE + 5)
        except Exception as err:  # noqa: BLE001
            ok, detail = False, error_of(err)
        return report.step(name, ok, detail)

    async def register_bot():
        body = {"type": "m.login.application_service", "username": args.bot, "inhibit_login": True}
        resp = await az.intent.api.request(Method.POST, Path.v3.register, body)
        return resp.get("user_id") == bot_id, json.dumps(resp)

    try:
        await step("register the bot (m.login.application_service)", register_bot())
        ok, detail = await expect_error(
            az.intent.api.request(
                Method.POST,
                Path.v3.register,
                {"type": "m.login.application_service", "username": args.bot, "inhibit_login": True},
            ),
            400,
            ("M_USER_IN_USE",),
        )
        report.step("register the bot again: M_USER_IN_USE", ok, detail)
        # What every mautrix bridge calls at start: must be quiet now the bot exists (a failure
        # shows in the next steps).
        try:
            await az.intent.ensure_registered()
        except Exception as err:  # noqa: BLE001
            logging.warning("ensure_registered for the bot: %s", error_of(err))

        async def whoami_bot():
            who = await az.intent.whoami()
            return who.user_id == bot_id, who.user_id

        await step("whoami as the bot", whoami_bot())

        ghost = az.intent.user(ghost_id)

        async def register_ghost():
            await ghost.ensure_registered()
            return True, ghost_id

        await step("register a ghost user", register_ghost())

        async def whoami_ghost():
            who = await ghost.whoami()
            return who.user_id == ghost_id, who.user_id

        await step("whoami masquerading as the ghost", whoami_ghost())

        async def displayname():
            await ghost.set_displayname("Alice (bridged)")
            profile = await human.get_profile(ghost_id)
            return profile.displayname == "Alice (bridged)", f"human sees {profile.displayname!r}"

        await step("ghost sets its displayname", displayname())

        ok, detail = await expect_error(
            az.intent.api.request(
                Method.POST,
                Path.v3.register,
                {"type": "m.login.application_service", "username": "outsider", "inhibit_login": True},
            ),
            400,
            ("M_EXCLUSIVE",),
        )
        report.step("register outside the namespace: M_EXCLUSIVE", ok, detail)

        # mautrix's intents always name their own user; ask as a bridge with a bug would.
        raw_as = HTTPAPI(base_url=args.homeserver, token=args.as_token)
        ok, detail = await expect_error(
            raw_as.request(Method.GET, Path.v3.account.whoami, query_params={"user_id": args.human}),
            403,
            ("M_FORBIDDEN", "M_EXCLUSIVE"),
        )
        report.step("masquerade as a user outside the namespace: 403", ok, detail)

        async def register_in_namespace():
            body = {"username": f"{args.prefix}mallory", "password": "Mallory-Secret-Pass-1"}
            try:
                await anon.request(Method.POST, Path.v3.register, body)
            except MatrixRequestError as err:
                if err.http_status != 401:
                    ok = err.http_status == 400 and err.errcode == "M_EXCLUSIVE"
                    return ok, f"got {error_of(err)}"
                # User-interactive auth first (Synapse checks the name only after it): the
                # session is in the raw 401 body.
                session = json.loads(getattr(err, "text", "") or "{}").get("session")
                body["auth"] = {"type": "m.login.dummy", "session": session}
            else:
                return False, "registered without user-interactive auth nor M_EXCLUSIVE"
            return await expect_error(anon.request(Method.POST, Path.v3.register, body), 400, ("M_EXCLUSIVE",))

        await step("human cannot register in the exclusive namespace: M_EXCLUSIVE", register_in_namespace())

        async def alias_in_namespace():
            own_room = await human.create_room()
            return await expect_error(
                human.api.request(
                    Method.PUT,
                    Path.v3.directory.room[f"#{args.prefix}stolen:{server}"],
                    {"room_id": own_room},
                ),
                400,
                ("M_EXCLUSIVE",),
            )

        await step("human cannot create an alias in the exclusive namespace: M_EXCLUSIVE", alias_in_namespace())

        async def ping():
            duration = await az.ping_self()
            return isinstance(duration, int) and duration >= 0, f"duration_ms {duration}"

        await step("appservice ping", ping())

        async def appservice_login():
            flows = await ClientAPI(api=HTTPAPI(base_url=args.homeserver)).get_login_flows()
            if not flows.supports_type(LoginType.APPSERVICE):
                return False, f"GET /login flows lack {LoginType.APPSERVICE}: {flows}"
            # What mautrix's E2EEHandler.start does without MSC4190.
            bot = ClientAPI(bot_id, api=HTTPAPI(base_url=args.homeserver, token=args.as_token))
            resp = await bot.login(
                login_type=LoginType.APPSERVICE,
                device_name="mautrix test bridge",
                store_access_token=True,
                update_hs_url=False,
            )
            who = await bot.whoami()
            ok = resp.user_id == bot_id and who.user_id == bot_id and who.device_id == resp.device_id
            return ok, f"logged in as {resp.user_id} on {resp.device_id}; whoami {who.user_id} {who.device_id}"

        await step("encrypted bridge: log the bot in with m.login.application_service", appservice_login())

        async def msc4190_device():
            # What mautrix's E2EEHandler.start does with MSC4190, for the second registration
            # (`io.element.msc4190: true`; Synapse refuses appservice logins to such a one).
            e2ee_bot_id = f"@{args.e2ee_bot}:{server}"
            token = args.e2ee_as_token
            registered = await HTTPAPI(base_url=args.homeserver, token=token).request(
                Method.POST,
                Path.v3.register,
                {"type": "m.login.application_service", "username": args.e2ee_bot, "inhibit_login": True},
            )
            bot = ClientAPI(e2ee_bot_id, api=HTTPAPI(base_url=args.homeserver, token=token))
            await bot.create_device_msc4190(device_id="MXBRIDGEDEV", initial_display_name="mautrix test bridge")
            who = await bot.whoami()
            devices = await bot.api.request(Method.GET, Path.v3.devices)
            listed = [d.get("device_id") for d in devices.get("devices", [])]
            ok = who.user_id == e2ee_bot_id and who.device_id == "MXBRIDGEDEV" and "MXBRIDGEDEV" in listed
            return ok, f"registered {registered.get('user_id')}; whoami {who.user_id} {who.device_id}; devices {listed}"

        await step("encrypted bridge (MSC4190): create a bot device with the as_token", msc4190_device())

        portal = None

        async def create_portal():
            nonlocal portal
            portal = await az.intent.create_room(
                alias_localpart=portal_alias[1:].split(":", 1)[0],
                name="Portal",
                invitees=[args.human],
            )
            resolved = await human.resolve_room_alias(portal_alias)
            return resolved.room_id == portal, f"{portal_alias} -> {resolved.room_id} (created {portal})"

        await step("bot creates a portal room with an alias in its namespace", create_portal())
        if portal is None:
            raise RuntimeError("no portal room")

        async def ghost_joins():
            await ghost.ensure_joined(portal)
            members = await az.intent.get_joined_members(portal)
            return ghost_id in members, f"members {sorted(members)}"

        await step("ghost joins the portal", ghost_joins())

        async def create_event():
            # What mautrix's power-level check asks when its state store lacks the room's
            # create event (a bridge restarted, or transactions not yet in): spec v1.16
            # `GET /rooms/{roomId}/state/{eventType}/{stateKey}?format=event`.
            event = await az.intent.get_state_event(portal, EventType.ROOM_CREATE, format="event")
            ok = str(event.type) == "m.room.create" and event.sender == bot_id and bool(event.event_id)
            return ok, f"{event.type} from {event.sender} ({event.event_id})"

        await step("bot reads the portal's create event (?format=event)", create_event())

        async def human_joins():
            room_id = await human.join_room(portal_alias, max_retries=0)
            return room_id == portal, f"joined {room_id}"

        await step("human joins the portal by alias", human_joins())

        massaged_ts = int(time.time() * 1000) - 3_600_000
        sent = None

        async def ghost_sends():
            nonlocal sent
            content = TextMessageEventContent(msgtype=MessageType.TEXT, body="hello from the bridge")
            sent = await ghost.send_message_event(portal, EventType.ROOM_MESSAGE, content, timestamp=massaged_ts)
            return bool(sent), sent

        await step("ghost sends a message with a massaged timestamp", ghost_sends())

        async def human_reads():
            event = await human.get_event(portal, sent)
            ok = (
                event.sender == ghost_id
                and event.content.body == "hello from the bridge"
                and event.timestamp == massaged_ts
            )
            return ok, f"sender {event.sender}, ts {event.timestamp} (sent with {massaged_ts})"

        await step("human reads the ghost's message", human_reads())

        def position(sender, body):
            """Where a message arrived among the transactions' events, or None."""
            for index, (kind, event) in enumerate(received):
                if (
                    kind == "pdu"
                    and event.sender == sender
                    and str(event.type) == "m.room.message"
                    and getattr(event.content, "body", None) == body
                ):
                    return index
            return None

        async def human_message_arrives():
            await human.send_text(portal, "hello ghost")
            ok, detail = await wait_for(
                lambda: position(args.human, "hello ghost") is not None, "the appservice's transactions"
            )
            if not ok:
                return ok, detail
            # Events come in stream order: the ghost's earlier message (in its namespace) first.
            ghost_at = position(ghost_id, "hello from the bridge")
            human_at = position(args.human, "hello ghost")
            ordered = ghost_at is not None and ghost_at < human_at
            return ordered, f"{detail}; ghost's message at {ghost_at}, human's at {human_at}"

        await step("transaction delivers the human's message", human_message_arrives())

        async def typing_arrives():
            await human.set_typing(portal, timeout=10_000)
            return await wait_for(
                lambda: any(
                    kind == "ephemeral"
                    and str(event.type) == "m.typing"
                    and event.room_id == portal
                    and args.human in (event.content.user_ids or [])
                    for kind, event in received
                ),
                "an m.typing ephemeral event",
            )

        await step("ephemeral: the human's typing reaches the appservice", typing_arrives())

        async def alias_query():
            room_id = await human.join_room(auto_alias, max_retries=0)
            return auto_alias in queried_aliases and bool(room_id), f"joined {room_id}; queries {queried_aliases}"

        await step("alias query: joining an unknown alias in the namespace creates the portal", alias_query())

        async def user_query():
            await human.invite_user(portal, queried_ghost)
            ok, detail = await wait_for(lambda: queried_ghost in queried_users, "a user query")
            return ok, f"{detail}; queries {queried_users}"

        await step("user query: inviting an unknown ghost asks the appservice", user_query())

    finally:
        await az.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--homeserver", required=True, help="client-server API base URL")
    parser.add_argument("--server-name", required=True)
    parser.add_argument("--id", required=True, help="the registration's id")
    parser.add_argument("--port", type=int, required=True, help="the registration's url port on 127.0.0.1")
    parser.add_argument("--bot", required=True, help="the registration's sender_localpart")
    parser.add_argument("--prefix", required=True, help="localpart prefix of the exclusive namespaces")
    parser.add_argument("--human", required=True, help="the human user's ID")
    parser.add_argument("--e2ee-bot", required=True, help="sender_localpart of the MSC4190 registration")
    args = parser.parse_args()
    # Secrets come on stdin, not the command line (visible in ps): as_token, hs_token, human's
    # access token, the MSC4190 registration's as_token, one per line.
    args.as_token, args.hs_token, args.human_token, args.e2ee_as_token = (
        sys.stdin.readline().strip() for _ in range(4)
    )
    logging.basicConfig(stream=sys.stderr, level=logging.DEBUG, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    report = Report()
    reason = "an earlier step failed"
    try:
        asyncio.run(run(args, report))
    except Exception as err:  # noqa: BLE001
        reason = error_of(err)
        logging.exception("driver stopped")
    report.finish(reason)


if __name__ == "__main__":
    main()
