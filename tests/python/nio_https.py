"""matrix-nio, a stock Python Matrix client, against Outpost's HTTPS client port.

    nio_https.py BASE_URL CA_FILE USER PASSWORD

Trusts only CA_FILE (an ssl.SSLContext with no system roots), logs in, creates a room, sends a
message, syncs until it comes back, and prints one JSON object with what it saw. A TLS failure
is reported as {"tls_error": "..."} (exit 0), so the caller can assert a refusal too.
"""

import asyncio
import json
import ssl
import sys

import aiohttp
from nio import AsyncClient, AsyncClientConfig, LoginResponse, RoomCreateResponse, RoomSendResponse, SyncResponse


async def run(base, ca_file, user, password):
    context = ssl.create_default_context(cafile=ca_file)
    # nio retries connection errors (a refused handshake among them) forever by default.
    client = AsyncClient(base, user, ssl=context, config=AsyncClientConfig(max_timeouts=1))
    try:
        try:
            login = await client.login(password, device_name="nio over https")
        except aiohttp.ClientConnectorCertificateError as err:
            return {"tls_error": str(err)}
        except aiohttp.ClientSSLError as err:
            return {"tls_error": str(err)}
        if not isinstance(login, LoginResponse):
            return {"error": f"login: {login}"}
        created = await client.room_create(name="nio over https")
        if not isinstance(created, RoomCreateResponse):
            return {"error": f"createRoom: {created}"}
        sent = await client.room_send(
            created.room_id,
            "m.room.message",
            {"msgtype": "m.text", "body": "hello from nio"},
        )
        if not isinstance(sent, RoomSendResponse):
            return {"error": f"send: {sent}"}
        bodies = []
        since = None
        for _ in range(10):
            sync = await client.sync(timeout=3000, since=since)
            if not isinstance(sync, SyncResponse):
                return {"error": f"sync: {sync}"}
            since = sync.next_batch
            room = sync.rooms.join.get(created.room_id)
            if room:
                bodies += [e.body for e in room.timeline.events if hasattr(e, "body")]
            if "hello from nio" in bodies:
                break
        return {
            "user_id": login.user_id,
            "device_id": login.device_id,
            "room_id": created.room_id,
            "event_id": sent.event_id,
            "bodies": bodies,
        }
    finally:
        await client.close()


if __name__ == "__main__":
    print(json.dumps(asyncio.run(run(*sys.argv[1:5]))))
