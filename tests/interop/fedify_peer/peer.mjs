// A Fedify server on loopback, driven by tests/interop/test_activitypub_fedify.py.
//
// It has one actor, `peer` (its own RSA key pair, used for draft-cavage and RFC 9421
// signatures, and an Ed25519 one for object proofs), an inbox (per actor and shared) that
// parses what arrives with Fedify's vocabulary classes, a followers collection, its Notes
// (dereferenceable at /notes/{id}), and a control API for the test:
//
//   POST /control/follow  {"object": "<actor URL>"}  look the actor up and send it a Follow
//   POST /control/post    {"content": "<html>"}      send a Create(Note) to every follower
//   GET  /control/state                              what was received, sent and parsed
//
// A Follow of `peer` is accepted at once (an Accept embedding the Follow, sent to the
// follower's inbox) and its actor remembered as a follower; an Undo of that Follow forgets it.
//
// Environment: PEER_PORT (listen on 127.0.0.1 only), PEER_ORIGIN (e.g.
// http://fedify.localhost:PORT, the canonical origin of the actor's URLs).
//
// `*.localhost` names are loopback (RFC 6761) but glibc does not resolve them: dns.lookup is
// wrapped so that Fedify's fetches of `http://blog.localhost:PORT/...` reach 127.0.0.1 with the
// Host header unchanged. Every outgoing fetch is recorded with the signature scheme it carried
// and the status it got, which is how the test sees Fedify's double-knock (RFC 9421 first,
// draft-cavage after a 400/401).

import { AsyncLocalStorage } from "node:async_hooks";
import dns from "node:dns";
import http from "node:http";
import { randomUUID } from "node:crypto";

const LOOPBACK = "127.0.0.1";

const originalLookup = dns.lookup;
dns.lookup = function lookup(hostname, options, callback) {
  if (typeof options === "function") {
    callback = options;
    options = {};
  } else if (typeof options === "number") {
    options = { family: options };
  }
  if (hostname === "localhost" || hostname.endsWith(".localhost")) {
    if (options?.all) {
      process.nextTick(callback, null, [{ address: LOOPBACK, family: 4 }]);
    } else {
      process.nextTick(callback, null, LOOPBACK, 4);
    }
    return {};
  }
  return originalLookup.call(dns, hostname, options, callback);
};

const state = {
  outgoing: [], // every fetch Fedify made: method, url, signature scheme, status (and for a
  // POST, the type and id of the activity it carried)
  incoming: [], // every GET of our actor etc.: path, signature scheme and key id, our status
  inbox_requests: [], // every POST to our inboxes: path, signature scheme, status we answered
  received: [], // activities our inbox listeners parsed
  errors: [], // inbox listener errors
  sent: [], // activities the peer sent on its own: Accepts of Follows, Creates of its Notes
  followers: [], // the peer's current followers: id, inbox, shared_inbox, follow_id
};

function signatureScheme(headers) {
  if (headers.get("signature-input")) return "rfc9421";
  if (headers.get("signature")) return "draft-cavage";
  return "none";
}

function signatureKeyId(headers) {
  const input = headers.get("signature-input");
  const signature = headers.get("signature");
  const match = input
    ? /keyid="([^"]*)"/i.exec(input)
    : signature
      ? /keyId="([^"]*)"/.exec(signature)
      : null;
  return match ? match[1] : null;
}

// The type and id of the activity a POST carries (read from a clone: the body is still sent).
async function postedActivity(input, init) {
  try {
    const body =
      typeof init?.body === "string"
        ? init.body
        : input instanceof Request && init?.body == null
          ? await input.clone().text()
          : null;
    if (body == null) return null;
    const parsed = JSON.parse(body);
    return { type: parsed.type ?? null, id: parsed.id ?? null };
  } catch {
    return null;
  }
}

const originalFetch = globalThis.fetch;
globalThis.fetch = async function recordingFetch(input, init) {
  const request = input instanceof Request ? input : new Request(input, init);
  const entry = {
    method: init?.method ?? request.method,
    url: request.url,
    scheme: signatureScheme(new Headers(init?.headers ?? request.headers)),
    status: null,
  };
  if (entry.method === "POST") entry.activity = await postedActivity(input, init);
  state.outgoing.push(entry);
  try {
    const response = await originalFetch(input, init);
    entry.status = response.status;
    return response;
  } catch (error) {
    entry.error = String(error);
    throw error;
  }
};

// Imported after the wrappers above so that Fedify binds nothing earlier.
const { configure, getConsoleSink } = await import("@logtape/logtape");
const { createFederation, generateCryptoKeyPair, MemoryKvStore } = await import("@fedify/fedify");
const vocab = await import("@fedify/vocab");
const { Accept, Activity, Article, Create, Endpoints, Event, Follow, Note, Person, Place, Undo } =
  vocab;
const { PUBLIC_COLLECTION } = vocab;
// Fedify's own Temporal (Node 22 has none): the Note's `published`.
const { Temporal } = await import("@js-temporal/polyfill");

await configure({
  contextLocalStorage: new AsyncLocalStorage(),
  sinks: { console: getConsoleSink() },
  loggers: [
    { category: "fedify", lowestLevel: "debug", sinks: ["console"] },
    { category: ["logtape", "meta"], lowestLevel: "warning", sinks: ["console"] },
  ],
});

const port = Number(process.env.PEER_PORT);
const origin = process.env.PEER_ORIGIN;
if (!port || !origin) {
  console.error("PEER_PORT and PEER_ORIGIN are required");
  process.exit(2);
}
const IDENTIFIER = "peer";

// RSA for HTTP signatures (draft-cavage and RFC 9421), Ed25519 for the Object Integrity Proofs
// (FEP-8b32) Fedify attaches to what it sends, as Fedify servers in the wild do.
const keyPairs = [
  await generateCryptoKeyPair("RSASSA-PKCS1-v1_5"),
  await generateCryptoKeyPair("Ed25519"),
];

const federation = createFederation({
  kv: new MemoryKvStore(),
  origin,
  allowPrivateAddress: true, // the servers under test are on loopback
  userAgent: "rose-ash-interop-fedify-peer",
});

federation
  .setActorDispatcher("/users/{identifier}", async (ctx, identifier) => {
    if (identifier !== IDENTIFIER) return null;
    const keys = await ctx.getActorKeyPairs(identifier);
    return new Person({
      id: ctx.getActorUri(identifier),
      preferredUsername: identifier,
      name: "Fedify peer",
      summary: "Follows Rose Ash actors in the interop tests",
      inbox: ctx.getInboxUri(identifier),
      endpoints: new Endpoints({ sharedInbox: ctx.getInboxUri() }),
      followers: ctx.getFollowersUri(identifier),
      publicKey: keys[0].cryptographicKey,
      assertionMethods: keys.map((key) => key.multikey),
    });
  })
  .setKeyPairsDispatcher(async (_ctx, identifier) => (identifier === IDENTIFIER ? keyPairs : []))
  // WebFinger: acct:peer@<host> is the actor `peer`.
  .mapHandle((_ctx, username) => (username === IDENTIFIER ? IDENTIFIER : null));

// The peer's followers, by actor id: what a Create of a Note is sent to.
const followers = new Map(); // actor id -> { actor (a Recipient), follow_id }
const notes = new Map(); // note id (the {id} of /notes/{id}) -> the Note

function publishFollowers() {
  state.followers = [...followers.values()].map(({ actor, follow_id }) => ({
    id: actor.id?.href ?? null,
    inbox: actor.inboxId?.href ?? null,
    shared_inbox: actor.endpoints?.sharedInbox?.href ?? null,
    follow_id,
  }));
}

federation.setFollowersDispatcher("/users/{identifier}/followers", async (_ctx, identifier) => {
  if (identifier !== IDENTIFIER) return null;
  return { items: [...followers.values()].map(({ actor }) => actor) };
});

federation.setObjectDispatcher(
  Note,
  "/notes/{id}",
  async (_ctx, values) => notes.get(values.id) ?? null,
);

function text(value) {
  return value == null ? null : value.toString();
}

function urlOf(value) {
  if (value == null) return null;
  if (value instanceof URL) return value.href;
  return value.href?.href ?? null; // a Link
}

function typeName(object) {
  for (const [name, cls] of Object.entries({ Article, Event, Note, Place, Follow, Undo })) {
    if (object instanceof cls) return name;
  }
  return object?.constructor?.name ?? null;
}

async function describeObject(object) {
  if (object == null) return null;
  const described = {
    type: typeName(object),
    id: object.id?.href ?? null,
    name: text(object.name),
    summary: text(object.summary),
    content: text(object.content),
    url: urlOf(object.url),
    published: text(object.published),
    attributed_to: object.attributionId?.href ?? null,
    to: object.toIds.map((id) => id.href),
    cc: object.ccIds.map((id) => id.href),
  };
  if (object instanceof Event) {
    described.start_time = text(object.startTime);
    described.end_time = text(object.endTime);
    const location = await object.getLocation();
    described.location =
      location == null
        ? null
        : {
            type: typeName(location),
            name: text(location.name),
            latitude: location instanceof Place ? location.latitude : null,
            longitude: location instanceof Place ? location.longitude : null,
          };
  }
  described.json = await object.toJsonLd({ format: "compact" });
  return described;
}

// A listener that throws makes Fedify answer 500 (and the sender retry): record the error for
// the test instead.
function recording(listener) {
  return async (ctx, activity) => {
    try {
      await listener(ctx, activity);
    } catch (error) {
      const what = `${activity.constructor.name} ${activity.id?.href}`;
      state.errors.push(`${what}: ${error?.stack ?? error}`);
    }
  };
}

federation
  .setInboxListeners("/users/{identifier}/inbox", "/inbox")
  .on(Accept, recording(async (ctx, accept) => {
    // The Follow is ours (another origin than the Accept's): by default Fedify would not trust
    // the embedded copy and would dereference its id. Read what the Accept embeds instead:
    // that is what the test checks (an Accept must embed the Follow it accepts).
    const follow = await accept.getObject({ crossOrigin: "trust" });
    state.received.push({
      type: "Accept",
      id: accept.id?.href ?? null,
      actor: accept.actorId?.href ?? null,
      object_id: accept.objectId?.href ?? null,
      object:
        follow == null
          ? null
          : {
              type: typeName(follow),
              id: follow.id?.href ?? null,
              actor: follow instanceof Follow ? (follow.actorId?.href ?? null) : null,
              object: follow instanceof Follow ? (follow.objectId?.href ?? null) : null,
            },
    });
  }))
  .on(Follow, recording(async (ctx, follow) => {
    // Fedify calls listeners only for activities whose signature it verified.
    const entry = {
      type: "Follow",
      id: follow.id?.href ?? null,
      actor: follow.actorId?.href ?? null,
      object: follow.objectId?.href ?? null,
      verified: true,
      accept_id: null,
    };
    state.received.push(entry);
    if (follow.id == null || follow.objectId == null) return;
    const parsed = ctx.parseUri(follow.objectId);
    if (parsed?.type !== "actor" || parsed.identifier !== IDENTIFIER) return;
    const follower = await follow.getActor();
    if (follower == null || follower.id == null || follower.inboxId == null) {
      throw new Error(`the follower of ${follow.id.href} has no inbox`);
    }
    const accept = new Accept({
      id: new URL(`/accepts/${randomUUID()}`, origin),
      actor: ctx.getActorUri(IDENTIFIER),
      to: follower.id,
      object: follow,
    });
    followers.set(follower.id.href, { actor: follower, follow_id: follow.id.href });
    publishFollowers();
    entry.accept_id = accept.id.href;
    await ctx.sendActivity({ identifier: IDENTIFIER }, follower, accept);
    state.sent.push({
      type: "Accept",
      id: accept.id.href,
      object: follow.id.href,
      to: [follower.inboxId.href],
    });
  }))
  .on(Undo, recording(async (ctx, undo) => {
    const undone = await undo.getObject();
    const entry = {
      type: "Undo",
      id: undo.id?.href ?? null,
      actor: undo.actorId?.href ?? null,
      object_id: undo.objectId?.href ?? null,
      object:
        undone == null
          ? null
          : {
              type: typeName(undone),
              id: undone.id?.href ?? null,
              actor: undone instanceof Follow ? (undone.actorId?.href ?? null) : null,
              object: undone instanceof Follow ? (undone.objectId?.href ?? null) : null,
            },
      forgot_follower: false,
    };
    state.received.push(entry);
    if (!(undone instanceof Follow) || undo.actorId == null) return;
    // Only the follower itself can undo its Follow (of the peer).
    const actorId = undo.actorId.href;
    if (undone.actorId?.href !== actorId) return;
    if (undone.objectId?.href !== ctx.getActorUri(IDENTIFIER).href) return;
    entry.forgot_follower = followers.delete(actorId);
    publishFollowers();
  }))
  .on(Create, recording(async (ctx, create) => {
    const object = await create.getObject();
    state.received.push({
      type: "Create",
      id: create.id?.href ?? null,
      actor: create.actorId?.href ?? null,
      to: create.toIds.map((id) => id.href),
      cc: create.ccIds.map((id) => id.href),
      object: await describeObject(object),
    });
  }))
  .on(Activity, recording(async (ctx, activity) => {
    state.received.push({
      type: activity.constructor.name,
      id: activity.id?.href ?? null,
      actor: activity.actorId?.href ?? null,
    });
  }))
  .onError((ctx, error) => {
    state.errors.push(String(error?.stack ?? error));
  });

function json(response, status, body) {
  const payload = JSON.stringify(body);
  response.writeHead(status, { "content-type": "application/json" });
  response.end(payload);
}

async function follow(target) {
  const ctx = federation.createContext(new URL(origin), undefined);
  const actor = await ctx.lookupObject(target);
  if (actor == null || actor.inboxId == null) {
    return { error: `no actor with an inbox at ${target}`, found: typeName(actor) };
  }
  const activity = new Follow({
    id: new URL(`/follows/${randomUUID()}`, origin),
    actor: ctx.getActorUri(IDENTIFIER),
    object: actor.id,
  });
  try {
    await ctx.sendActivity({ identifier: IDENTIFIER }, actor, activity);
  } catch (error) {
    return { follow_id: activity.id.href, actor_id: actor.id?.href, error: String(error) };
  }
  return {
    follow_id: activity.id.href,
    actor_id: actor.id?.href ?? null,
    actor_type: typeName(actor) ?? actor.constructor.name,
    preferred_username: text(actor.preferredUsername),
    inbox: actor.inboxId.href,
    shared_inbox: actor.endpoints?.sharedInbox?.href ?? null,
  };
}

// A Create of a new Note by the peer (to Public, cc its followers), sent to every follower.
async function post(content) {
  const ctx = federation.createContext(new URL(origin), undefined);
  const noteId = randomUUID();
  const note = new Note({
    id: ctx.getObjectUri(Note, { id: noteId }),
    attribution: ctx.getActorUri(IDENTIFIER),
    to: PUBLIC_COLLECTION,
    cc: ctx.getFollowersUri(IDENTIFIER),
    content,
    published: Temporal.Now.instant(),
  });
  notes.set(noteId, note);
  const create = new Create({
    id: new URL(`/creates/${randomUUID()}`, origin),
    actor: ctx.getActorUri(IDENTIFIER),
    to: PUBLIC_COLLECTION,
    cc: ctx.getFollowersUri(IDENTIFIER),
    object: note,
    published: note.published,
  });
  const recipients = [...followers.values()].map(({ actor }) => actor);
  const result = {
    create_id: create.id.href,
    note_id: note.id.href,
    sent_to: recipients.map((actor) => actor.inboxId.href),
  };
  if (recipients.length > 0) {
    try {
      await ctx.sendActivity({ identifier: IDENTIFIER }, recipients, create);
    } catch (error) {
      return { ...result, error: String(error) };
    }
  }
  state.sent.push({
    type: "Create",
    id: result.create_id,
    object: result.note_id,
    to: result.sent_to,
  });
  return result;
}

async function control(request, response, url, body) {
  if (request.method === "GET" && url.pathname === "/control/state") {
    return json(response, 200, state);
  }
  if (request.method === "POST" && url.pathname === "/control/follow") {
    const { object } = JSON.parse(body.toString("utf8"));
    return json(response, 200, await follow(object));
  }
  if (request.method === "POST" && url.pathname === "/control/post") {
    const { content } = JSON.parse(body.toString("utf8"));
    return json(response, 200, await post(content));
  }
  return json(response, 404, { error: "no such control endpoint" });
}

const server = http.createServer(async (request, response) => {
  try {
    const chunks = [];
    for await (const chunk of request) chunks.push(chunk);
    const body = Buffer.concat(chunks);
    const url = new URL(request.url, `http://${request.headers.host ?? `${LOOPBACK}:${port}`}`);
    if (url.pathname.startsWith("/control/")) {
      return await control(request, response, url, body);
    }
    const headers = new Headers();
    for (const [name, value] of Object.entries(request.headers)) {
      for (const item of Array.isArray(value) ? value : [value]) headers.append(name, item);
    }
    const hasBody = !["GET", "HEAD"].includes(request.method);
    const fetchRequest = new Request(url, {
      method: request.method,
      headers,
      body: hasBody ? body : undefined,
    });
    const answer = await federation.fetch(fetchRequest, {
      contextData: undefined,
      onNotFound: () => new Response("not found", { status: 404 }),
      onNotAcceptable: () => new Response("not acceptable", { status: 406 }),
    });
    const payload = Buffer.from(await answer.arrayBuffer());
    if (request.method === "GET") {
      state.incoming.push({
        method: request.method,
        path: url.pathname,
        scheme: signatureScheme(headers),
        key_id: signatureKeyId(headers),
        status: answer.status,
      });
    }
    if (request.method === "POST") {
      let activity = null;
      try {
        const parsed = JSON.parse(body.toString("utf8"));
        activity = { type: parsed.type ?? null, id: parsed.id ?? null };
      } catch {
        // recorded as null
      }
      state.inbox_requests.push({
        path: url.pathname,
        scheme: signatureScheme(headers),
        key_id: signatureKeyId(headers),
        status: answer.status,
        activity,
        answer: answer.status >= 400 ? payload.toString("utf8").slice(0, 500) : null,
      });
    }
    response.writeHead(answer.status, Object.fromEntries(answer.headers));
    response.end(payload);
  } catch (error) {
    console.error(error);
    if (!response.headersSent) json(response, 500, { error: String(error) });
  }
});

server.listen(port, LOOPBACK, () => {
  console.log(JSON.stringify({ ready: true, actor: `${origin}/users/${IDENTIFIER}` }));
});

for (const signal of ["SIGTERM", "SIGINT"]) {
  process.on(signal, () => {
    server.close();
    process.exit(0);
  });
}
