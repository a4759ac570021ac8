"""ActivityPub: an actor per app (and an instance actor), discovery, HTTP signatures, inboxes,
a transactional outbox with durable delivery, and the publishing API.

Modules:
    urls         every URL we serve (actors, inboxes, collections, objects)
    keys         the one keypair all local actors present (encrypted at rest)
    signatures   HTTP signatures: draft-cavage sign/verify, RFC 9421 verify, Digest/Content-Digest
    remote       safe outgoing fetches (SSRF rules, caps), signed GETs, the remote actor cache
    documents    actor, WebFinger, NodeInfo, host-meta and collection documents
    routes       the GET endpoints every app serves (content negotiation, HTML profile)
    inbox        POST inboxes: verify, store, 202; and processing of stored items (worker)
    publish      emit_activity() and publish(app, obj) for Note, Article, Event
    delivery     the EventProcessor: fan-out, signed delivery, retries, dead letters
    follows      our actors following remote actors: by URL or handle (WebFinger), Follow, Undo
    blocks       blocked domains and actors
"""
