"""The object store: one cluster-wide resourceVersion counter (etcd's revision), a
bounded event history for watch resume, watchers, and persistence under the run
directory so a restarted server keeps its objects, its history and its counter.

Objects are never mutated once stored (writers store a new dict), so a list can
hand out references and a paginated list can keep a consistent snapshot."""
import collections
import json
import os
import queue
import threading


class Gone(Exception):
    """The resourceVersion asked for is older than the retained history (HTTP 410)."""

    def __init__(self, asked, oldest):
        super().__init__(f"too old resource version: {asked} ({oldest})")
        self.asked, self.oldest = asked, oldest


class Event:
    __slots__ = ("rv", "type", "gr", "obj", "prev")

    def __init__(self, rv, type_, gr, obj, prev):
        self.rv, self.type, self.gr, self.obj, self.prev = rv, type_, gr, obj, prev

    def to_json(self):
        return {"rv": self.rv, "t": self.type, "gr": self.gr, "obj": self.obj, "prev": self.prev}


GONE = object()  # queued to a watcher when the history it stands on is dropped


class Watcher:
    def __init__(self, store, gr, namespace):
        self.store, self.gr, self.namespace = store, gr, namespace
        self.queue = queue.SimpleQueue()

    def wants(self, event):
        if event.gr != self.gr:
            return False
        if self.namespace is None:
            return True
        return (event.obj.get("metadata") or {}).get("namespace") == self.namespace

    def close(self):
        self.store.remove_watcher(self)


def key_of(obj):
    meta = obj.get("metadata") or {}
    return (meta.get("namespace") or "", meta["name"])


class Store:
    # Events kept for watch resume (etcd keeps about 5 minutes); a snapshot keeps
    # the newest SNAPSHOT_HISTORY of them, so a restart keeps resumes working.
    SNAPSHOT_HISTORY = 5000

    def __init__(self, data_dir=None, history_size=20000):
        self.lock = threading.RLock()
        self.objects = collections.defaultdict(dict)  # gr -> (ns, name) -> obj
        self.by_namespace = collections.defaultdict(lambda: collections.defaultdict(dict))  # gr -> ns -> key -> obj
        self.flags = {}  # (gr, ns, name) -> {"system": bool, "synthetic": bool}
        self.rv = 0
        self.compacted_rv = 0  # watches from an RV below this get 410
        self.history = collections.deque()
        self.history_size = history_size
        self.watchers = set()
        self.listeners = []  # callables(event), run under the lock after each write
        self.data_dir = data_dir
        self._journal = None
        self._batch = 0
        if data_dir:
            os.makedirs(data_dir, exist_ok=True)
            self._load()

    # --- persistence -----------------------------------------------------------
    def _snapshot_path(self):
        return os.path.join(self.data_dir, "snapshot.json")

    def _journal_path(self):
        return os.path.join(self.data_dir, "journal.jsonl")

    def _load(self):
        try:
            with open(self._snapshot_path()) as f:
                snap = json.load(f)
            self.rv = snap["rv"]
            self.compacted_rv = snap.get("compacted", 0)
            for gr, obj, flags in snap["objects"]:
                self.objects[gr][key_of(obj)] = obj
                self.by_namespace[gr][key_of(obj)[0]][key_of(obj)] = obj
                if flags:
                    self.flags[(gr,) + key_of(obj)] = flags
            for e in snap.get("history", []):
                self.history.append(Event(e["rv"], e["t"], e["gr"], e["obj"], e.get("prev")))
        except FileNotFoundError:
            pass
        try:
            with open(self._journal_path()) as f:
                for line in f:
                    try:
                        rec = json.loads(line)
                    except ValueError:
                        break  # a torn last line after a crash
                    if "compact" in rec:
                        self.compacted_rv = rec["compact"]
                        self.history.clear()
                        continue
                    ev = Event(rec["rv"], rec["t"], rec["gr"], rec["obj"], rec.get("prev"))
                    self._apply(ev, rec.get("f"))
                    self.rv = max(self.rv, ev.rv)
                    self._remember(ev)
        except FileNotFoundError:
            pass
        self.checkpoint()

    def checkpoint(self):
        """Writes a snapshot (atomically) and empties the journal."""
        if not self.data_dir:
            return
        with self.lock:
            snap = {
                "rv": self.rv,
                "compacted": self.compacted_rv,
                "objects": [[gr, obj, self.flags.get((gr,) + k)] for gr, objs in self.objects.items()
                            for k, obj in objs.items()],
                "history": [e.to_json() for e in list(self.history)[-self.SNAPSHOT_HISTORY:]],
            }
            if len(self.history) > self.SNAPSHOT_HISTORY:
                # The older events are not in the snapshot: resumes before them get 410.
                snap["compacted"] = max(self.compacted_rv, self.history[-self.SNAPSHOT_HISTORY - 1].rv)
            tmp = self._snapshot_path() + ".tmp"
            with open(tmp, "w") as f:
                f.write(json.dumps(snap, separators=(",", ":")))  # json.dump would use the slow Python encoder
            os.replace(tmp, self._snapshot_path())
            if self._journal:
                self._journal.close()
            self._journal = open(self._journal_path(), "w")

    def _log(self, rec):
        if self._journal:
            self._journal.write(json.dumps(rec, separators=(",", ":")) + "\n")
            if not self._batch:
                self._journal.flush()

    def close(self):
        with self.lock:
            if self._journal:
                self.checkpoint()
                self._journal.close()
                self._journal = None

    # --- reads -----------------------------------------------------------------
    def get(self, gr, namespace, name):
        return self.objects.get(gr, {}).get((namespace or "", name))

    def list(self, gr, namespace=None):
        """(resourceVersion, objects sorted by namespace/name) at one instant."""
        with self.lock:
            objs = self.objects.get(gr, {})
            if namespace is None:
                items = sorted(objs.items())
            else:
                items = sorted(self.by_namespace.get(gr, {}).get(namespace, {}).items())
            return self.rv, [v for _, v in items]

    def flag(self, gr, obj, name):
        return bool((self.flags.get((gr,) + key_of(obj)) or {}).get(name))

    # --- writes ----------------------------------------------------------------
    def next_rv(self):
        return self.rv + 1

    def _apply(self, ev, flags):
        k = key_of(ev.obj)
        if ev.type == "DELETED":
            self.objects[ev.gr].pop(k, None)
            self.by_namespace[ev.gr][k[0]].pop(k, None)
            self.flags.pop((ev.gr,) + k, None)
        else:
            self.objects[ev.gr][k] = ev.obj
            self.by_namespace[ev.gr][k[0]][k] = ev.obj
            if flags:
                self.flags[(ev.gr,) + k] = flags

    def _remember(self, ev):
        self.history.append(ev)
        while len(self.history) > self.history_size:
            old = self.history.popleft()
            self.compacted_rv = old.rv

    def write(self, gr, type_, obj, prev=None, flags=None, stamp=True):
        """Stores obj (type_ ADDED, MODIFIED or DELETED) at the next resourceVersion.
        With stamp, metadata.resourceVersion is set here; returns the stored object."""
        with self.lock:
            self.rv += 1
            if stamp:
                obj = dict(obj)
                obj["metadata"] = dict(obj.get("metadata") or {}, resourceVersion=str(self.rv))
            ev = Event(self.rv, type_, gr, obj, prev)
            self._apply(ev, flags)
            rec = ev.to_json()
            if flags:
                rec["f"] = flags
            self._log(rec)
            self._remember(ev)
            for w in list(self.watchers):
                if w.wants(ev):
                    w.queue.put(ev)
            for listener in self.listeners:
                listener(ev)
            return obj

    def batch(self):
        store = self

        class _Batch:
            def __enter__(self):
                store.lock.acquire()
                store._batch += 1

            def __exit__(self, *a):
                store._batch -= 1
                if store._journal and not store._batch:
                    store._journal.flush()
                store.lock.release()

        return _Batch()

    def compact(self):
        """Drops the history (etcd compaction at the current revision): every open
        watch gets 410 and so does any resume from an older resourceVersion."""
        with self.lock:
            self.history.clear()
            self.compacted_rv = self.rv
            self._log({"compact": self.rv})
            if self._journal:
                self._journal.flush()
            for w in list(self.watchers):
                w.queue.put(GONE)
            return self.rv

    # --- watch -----------------------------------------------------------------
    def watch(self, gr, namespace, since_rv):
        """A watcher whose queue holds the events after since_rv (None: only new
        ones), then every new one. Raises Gone when since_rv is too old."""
        with self.lock:
            w = Watcher(self, gr, namespace)
            if since_rv is not None:
                if since_rv < self.compacted_rv:
                    raise Gone(since_rv, self.compacted_rv)
                for ev in self.history:
                    if ev.rv > since_rv and w.wants(ev):
                        w.queue.put(ev)
            self.watchers.add(w)
            return w, self.rv

    def remove_watcher(self, w):
        with self.lock:
            self.watchers.discard(w)
