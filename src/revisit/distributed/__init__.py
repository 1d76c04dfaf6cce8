"""Distributed mode: each pipeline stage as a worker over broker queues.

Modules: ``topology`` (stages and the queues between them, batch sequence numbers),
``publish`` (camera batches onto the broker), ``resolve`` (the ordered, transactional
resolve protocol), ``worker`` (the worker loop). The package imports the pipeline, never
the other way round.

::

    publisher ──► [frames] ─► detect ─► [faces] ─► embed ─► [embeddings] ─► resolve ─► [sightings] ─► store
    (ingest / API)                                                           │ PostgreSQL: one txn per batch
                                                                             ▼ (tenant lock, cursor, write)

Any number of workers of any stage may run on any machine (``revisit worker --stage S``).
Delivery is at-least-once (a worker acks its input only after its output is on the next
queue, or committed), and every step is idempotent, so ``kill -9`` of any worker at any
moment loses nothing and doubles nothing:

- detect / embed are pure functions of their input: a redelivered batch yields the same
  faces (deterministic ``face_image_id``).
- resolve decides identities and **commits them with the sightings in the same
  PostgreSQL transaction**, holding a per-tenant advisory lock
  (:meth:`revisit.store.sql_store.SQLStore.identity_transaction`): two resolvers can
  never create two visitors for one person because two sightings arrived at once, and
  visitor numbers come from the tenant's counter row read under that lock.
- **Order.** Online clustering depends on the order faces are seen. A publisher stamps
  its batches ``<stream>#<seq>``; resolvers apply each stream's batches strictly in
  ``seq`` order (a per-stream cursor row, advanced in the same transaction). A batch that
  arrives early (parallel detect/embed workers reorder) is parked in ``resolve_parked``
  (durably, then acked) and applied by whichever resolver commits its predecessor; its
  row stays, marked applied, until the worker has forwarded it to the store stage (an
  idle resolver forwards what a killed one applied but never forwarded). The
  result: the same sightings as the embedded default on the same input, however many
  workers, kills or redeliveries. Faces of a camera track not decided yet (a first face
  too weak to found a visitor, held for the track's next snapshots) are committed with
  their batch too (``held_faces``): a resolver that restarts, or reloads a tenant another
  resolver moved, reads them back (docs/queues.md). A resolver idle for
  ``pipeline.idle_flush_s`` decides them, as the embedded default does at the end of a
  run; a resolver stopped gracefully saves its open tracks (``open_tracks``) for the next
  one instead (docs/queues.md). Batches without a sequence (HTTP API) are resolved in arrival order under the
  tenant lock.
- A batch already committed (its frames are stored, or its seq is behind the cursor) is
  a replay: it is forwarded with the stored assignments, nothing is decided again.
- Each resolver keeps its gallery (faiss, or bookkeeping beside pgvector) in memory and
  reloads a tenant from the store when the tenant's ``identity_version`` moved (another
  resolver, a merge or an erasure committed since).
- store: post-commit work that needs no lock (alerts). Face crops, when
  ``privacy.keep_crops``, are rows written in resolve's transaction. A visitor the
  resolver withdrew (a poster found static after founding one) is erased in resolve's
  transaction, with the batch that found it.

Broker or database down: the worker logs, waits and reconnects; its unacked input is
delivered again (Redis: claimed after ``claim_idle_ms``). See docs/deploy.md.
"""
