"""ActivityPub's mechanics: an actor per app (and an instance actor), discovery, HTTP
signatures, inboxes. The domain logic (following, publishing, collections, blocks, processing
what arrived, delivery) is the social domain's: shared.services.social.

Modules:
    urls         every URL we serve (actors, inboxes, collections, objects)
    keys         the one keypair all local actors present (encrypted at rest)
    signatures   HTTP signatures: draft-cavage sign/verify, RFC 9421 verify, Digest/Content-Digest
    remote       safe outgoing fetches (SSRF rules, caps), signed GETs, the remote actor cache
    documents    actor, WebFinger, NodeInfo, host-meta and collection documents
    routes       the GET endpoints every app serves (content negotiation, HTML profile)
    inbox        POST inboxes: verify, store, 202 (the worker processes stored items)
"""
