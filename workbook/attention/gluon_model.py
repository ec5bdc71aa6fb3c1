"""A small model of one Hopper SM, enough to run a Gluon kernel's source on the CPU.

What :mod:`.gluon_cpu` hands the kernel in place of Gluon (its ``gl``, ``mbarrier``, ``tma``,
``warpgroup_mma``): each name does here what it does on the GPU, said in Python.

* Each partition of ``gl.warp_specialize`` (a producer warp, a consumer warpgroup) is a thread,
  and exactly one runs at a time: at every barrier, copy and matrix product it hands over to
  one chosen at random (seeded) among those that may go on. Each partition, and the copy
  engine, runs at its own random speed in one run, so rare orders (the producer far ahead, the
  copies slow) happen often; every seed is another interleaving, reproducible.
* An **mbarrier** counts arrivals and transaction bytes and completes a phase when both reach
  zero; ``wait(bar, parity)`` passes once the phase of that parity has completed, as PTX's
  ``try_wait.parity`` does (a fresh barrier passes a parity-1 wait); ``expect`` is
  ``arrive.expect_tx``: bytes to come and one arrival (as the compiled PTX shows).
* A **TMA copy** is in flight from its issue until the scheduler lets it land, at a moment of
  its choosing; only then are the bytes in shared memory and counted on the barrier.
* An asynchronous **wgmma** reads its shared-memory operands until ``warpgroup_mma_wait``
  retires it: the product is computed then, from what the buffers hold at that moment.

Faults (:class:`KernelFault`, one line naming the kernel's file and line): a deadlock (no
partition may go on and no copy is in flight); a TMA copy into a buffer a product or a TMA
store still reads, or another copy is filling; a product reading a buffer whose copy has not
landed; a store into a buffer still in use; a TMA store of a buffer written since the last
``fence_async_shared``; more arrivals than a barrier's count, more bytes than it expected, or
one partition arriving twice in one phase; a product's result used before it is retired, or
retired without its register operand among the wait's ``deps`` (which keep it alive); a
partition returning with products or TMA stores in flight.

What it cannot say: anything about speed, registers or layouts (the compiler's and the GPU's),
nor races the model does not have: it is sequentially consistent, the GPU's memory order is
weaker. Register tensors are torch tensors; layouts are ignored.
"""

from __future__ import annotations

import linecache
import random
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import torch

MAX_STEPS = 200_000   # scheduler turns per program before it gives up (no kernel here needs 10k)


class KernelFault(RuntimeError):
    """What the model saw the kernel do wrong, in one line."""


class _Abort(BaseException):
    """Raised in a partition's thread to stop it once another one has failed."""


# ---- the scheduler: partitions as threads, one running at a time -------------------------


@dataclass(eq=False)
class _Actor:
    name: str
    fn: object
    args: tuple
    until: object = None           # a predicate the scheduler checks before resuming it
    waiting_for: str = ""
    done: bool = False
    error: BaseException | None = None
    in_flight: list = field(default_factory=list)     # its unretired wgmma, oldest first
    unfenced: set = field(default_factory=set)        # buffers it stored to since a fence
    stores: int = 0                                   # its TMA stores in flight


class Machine:
    """One program (CTA): its partitions and its TMA copies in flight."""

    def __init__(self, rng: random.Random, filename: str, trace: list | None):
        self.rng, self.filename, self.trace = rng, filename, trace
        self.cv = threading.Condition()
        self.running: _Actor | None = None
        self.actors: list[_Actor] = []
        self.copies: list[tuple[str, object]] = []   # (what and where issued, land it)
        self.landing = ""                               # the copy landing now, for faults
        self.order: list[str] = []                      # who the scheduler picked, in turn
        self.steps = 0
        self.abort = False
        self.local = threading.local()
        self.program = (0, 0)

    def actor(self) -> _Actor | None:
        return getattr(self.local, "actor", None)

    def where(self) -> str:
        """file:line (function) of the kernel statement the calling thread is at."""
        frame = sys._getframe(1)
        while frame is not None and frame.f_code.co_filename != self.filename:
            frame = frame.f_back
        if frame is None:
            return "?"
        return f"{Path(self.filename).name}:{frame.f_lineno} ({frame.f_code.co_name})"

    def fault(self, what: str) -> KernelFault:
        who = self.actor()
        if who is None and self.landing:
            return KernelFault(f"program {self.program}: the {self.landing}: {what}")
        where = self.where()
        if where == "?" and who is not None:     # raised after the partition returned
            where = f"the end of {who.fn.__name__}"
        return KernelFault(f"program {self.program}: {who.name if who else 'setup'} at "
                           f"{where}: {what}")

    def log(self, what: str) -> None:
        if self.trace is not None:
            who = self.actor()
            name = who.name if who else ("copy engine" if self.landing else "setup")
            self.trace.append((self.program, self.steps, name, what))

    def pause(self, until=None, waiting_for: str = "") -> None:
        """Hand the SM to whoever the scheduler picks; resume once ``until()`` holds."""
        me = self.actor()
        if me is None:       # the kernel's setup, before warp_specialize: nothing to yield to
            if until is not None and not until():
                raise self.fault(f"waits for {waiting_for} before any partition runs")
            return
        me.until, me.waiting_for = until, f"{self.where()} waits for {waiting_for}"
        with self.cv:
            self.running = None
            self.cv.notify_all()
            while self.running is not me:
                self.cv.wait()
        if self.abort:
            raise _Abort
        me.until, me.waiting_for = None, ""

    def _thread(self, me: _Actor) -> None:
        self.local.actor = me
        with self.cv:
            while self.running is not me:
                self.cv.wait()
        try:
            if not self.abort:
                me.fn(*me.args)
                if me.in_flight or me.stores:
                    raise self.fault(f"returns with {len(me.in_flight)} wgmma and {me.stores}"
                                     " TMA stores in flight (their shared memory goes)")
        except _Abort:
            pass
        except BaseException as err:  # noqa: BLE001 - handed to the scheduler's thread
            me.error = err
        with self.cv:
            me.done = True
            self.running = None
            self.cv.notify_all()

    def _resume(self, who: _Actor) -> None:
        with self.cv:
            self.running = who
            self.cv.notify_all()
            while self.running is not None:
                self.cv.wait()

    def _stop(self) -> None:
        self.abort = True
        for who in self.actors:
            if not who.done:
                self._resume(who)

    def run(self, partitions) -> None:
        """gl.warp_specialize: every partition to its end, or a KernelFault."""
        for fn, args in partitions:
            name = fn.__name__.strip("_").replace("_", " ")
            self.actors.append(_Actor({"consumer": "consumer 0"}.get(name, name), fn, args))
        # each partition, and the copy engine, gets its own speed for this run: one seed has
        # the producer far ahead, another the copies slow, so that rare orders happen often
        self.speed = {who: self.rng.lognormvariate(0, 2) for who in self.actors + ["copies"]}
        threads = [threading.Thread(target=self._thread, args=(a,), daemon=True)
                   for a in self.actors]
        for t in threads:
            t.start()
        while True:
            failed = [a.error for a in self.actors if a.error is not None]
            if failed:
                self._stop()
                raise failed[0]
            live = [a for a in self.actors if not a.done]
            if not live and not self.copies:
                break
            choices = [a for a in live if a.until is None or a.until()] + self.copies
            if not choices:
                self._stop()
                raise KernelFault(f"program {self.program}: deadlock: " + "; ".join(
                    f"{a.name} {a.waiting_for}" for a in live))
            self.steps += 1
            if self.steps > MAX_STEPS:
                self._stop()
                raise KernelFault(f"program {self.program}: no end after {MAX_STEPS} turns")
            pick = self.rng.choices(choices, [self.speed[_who(c)] for c in choices])[0]
            if isinstance(pick, _Actor):
                self.order.append(pick.name)
                self._resume(pick)
            else:
                self.order.append(pick[0])
                self.copies.remove(pick)
                self.landing = pick[0]
                try:
                    pick[1]()
                except KernelFault:
                    self._stop()     # no partition thread is left waiting for its turn
                    raise
                self.landing = ""
        for t in threads:
            t.join()


def _who(choice) -> object:
    return choice if isinstance(choice, _Actor) else "copies"


# ---- shared memory, mbarriers, registers ---------------------------------------------------


class _Slot:
    """One shared-memory buffer's bookkeeping: who reads it, whether a copy is filling it."""

    def __init__(self, name: str):
        self.name = name
        self.readers = 0          # unretired wgmma and unfinished TMA stores reading it
        self.filling = False      # a TMA copy into it is in flight
        self.written = False      # a TMA copy into it has landed


class _Buffer:
    def __init__(self, data: torch.Tensor, slot: _Slot, machine: Machine):
        self.data, self.slot, self.m = data, slot, machine
        self.dtype = data.dtype
        self.type = SimpleNamespace(shape=list(data.shape))
        self.shape = self.type.shape

    def index(self, i: int) -> _Buffer:
        slots = self.__dict__.setdefault("_slots", {})
        if i not in slots:
            slots[i] = _Slot(f"{self.slot.name}[{i}]")
        return _Buffer(self.data[i], slots[i], self.m)

    def permute(self, dims) -> _Buffer:
        return _Buffer(self.data.permute(*dims), self.slot, self.m)

    def store(self, value: _T) -> None:
        if self.slot.readers or self.slot.filling:
            raise self.m.fault(f"stores into {self.slot.name} while a product, a TMA store "
                               "or a copy still uses it")
        self.data.copy_(value.a.to(self.data.dtype))
        self.m.actor().unfenced.add(self.slot)
        self.m.log(f"stores {self.slot.name}")


class _Barrier:
    def __init__(self, name: str, machine: Machine):
        self.name, self.m = name, machine
        self.count = None
        self.completed = 0        # phases completed so far
        self.tx = 0
        self.arrived: list = []   # who arrived in the current phase

    def init(self, count: int) -> None:
        self.count, self.pending = count, count

    def _check(self) -> None:
        if self.count is None:
            raise self.m.fault(f"uses {self.name} before mbarrier.init")

    def arrive(self, n: int = 1) -> None:
        self._check()
        who = self.m.actor()
        if who is not None and who in self.arrived:
            raise self.m.fault(f"arrives twice on {self.name} in its phase {self.completed}")
        self.arrived.append(who)
        self.pending -= n
        if self.pending < 0:
            raise self.m.fault(f"{self.name}: more arrivals than its count {self.count}")
        self._maybe_complete()

    def add_tx(self, nbytes: int) -> None:
        self.tx += nbytes
        if self.tx < 0:
            raise self.m.fault(f"{self.name}: more bytes landed than were expected")
        self._maybe_complete()

    def _maybe_complete(self) -> None:
        if self.pending == 0 and self.tx == 0:
            self.completed += 1
            self.pending, self.arrived = self.count, []
            self.m.log(f"{self.name} completes phase {self.completed - 1}")

    def passed(self, parity: int) -> bool:
        return self.count is not None and (self.completed & 1) != parity


class _Barriers:
    def __init__(self, name: str, n: int, machine: Machine):
        self.bars = [_Barrier(f"{name}[{i}]" if n > 1 else name, machine) for i in range(n)]

    def index(self, i: int) -> _Barrier:
        return self.bars[i]


def _bar(b) -> _Barrier:
    return b.bars[0] if isinstance(b, _Barriers) else b


class _T:
    """A register tensor: a torch tensor with the ``.type.shape`` Gluon code reads."""
    __slots__ = ("a",)

    def __init__(self, a):
        self.a = a

    @property
    def type(self):
        return SimpleNamespace(shape=list(self.a.shape), layout=None)

    @property
    def dtype(self):
        return self.a.dtype

    def to(self, dtype) -> _T:
        return _T(self.a.to(dtype))


def _unwrap(x):
    if isinstance(x, _Pending):
        raise x.machine.fault("uses a wgmma result before warpgroup_mma_wait retired it")
    return x.a if isinstance(x, _T) else x


def _binary(op):
    return lambda self, other: _T(op(self.a, _unwrap(other)))


def _rbinary(op):
    return lambda self, other: _T(op(_unwrap(other), self.a))


for _name, _op in {"add": torch.add, "sub": torch.sub, "mul": torch.mul, "truediv": torch.div,
                   "ge": torch.ge, "gt": torch.gt, "le": torch.le, "lt": torch.lt}.items():
    setattr(_T, f"__{_name}__", _binary(_op))
    setattr(_T, f"__r{_name}__", _rbinary(_op))
_T.__neg__ = lambda self: _T(-self.a)


@dataclass(eq=False)
class _Pending:
    machine: Machine
    compute: object
    reads: list
    registers: object = None         # operand A when it is a register tensor (P in P·V)
    value: torch.Tensor | None = None


class Pointer:
    """A pointer into a flat tensor: the kernel adds offsets (integers, index tensors) to it
    and ``gl.store``s through it."""

    def __init__(self, flat: torch.Tensor, offset=0):
        self.flat, self.offset = flat, offset

    def __add__(self, other):
        return Pointer(self.flat, self.offset + _unwrap(other))

    __radd__ = __add__


@dataclass
class Descriptor:
    """A TMA descriptor over a (rows, head_dim) view, tiles of ``block_rows`` rows."""
    tensor: torch.Tensor
    block_rows: int

    def __post_init__(self):
        d = self.tensor.shape[1]
        self.dtype = self.tensor.dtype
        self.layout = None
        self.block_type = SimpleNamespace(shape=[self.block_rows, d],
                                          nbytes=self.block_rows * d * self.tensor.element_size())


# ---- what the kernel's names stand for here -------------------------------------------------


def kernel_globals(m: Machine, acc: torch.dtype) -> dict:
    """gl, mbarrier, tma, warpgroup_mma, ... as the kernel's globals, bound to one program."""

    def dt(dtype):
        return acc if dtype == "float32" else dtype

    def allocate_shared_memory(dtype, shape, layout=None):
        frame = sys._getframe(1)
        line = linecache.getline(frame.f_code.co_filename, frame.f_lineno)
        name = line.split("=")[0].strip() if "=" in line else "smem"
        if dtype == "int64":           # mbarriers: [1] is one, [n, 1] a row of n
            return _Barriers(name, shape[0], m)
        return _Buffer(torch.zeros(shape, dtype=dtype), _Slot(name), m)

    def me() -> _Actor:
        who = m.actor()
        if who is None:
            raise m.fault("issues asynchronous work outside gl.warp_specialize's partitions")
        return who

    # -- mbarrier
    def init(bar, count):
        _bar(bar).init(count)

    def expect(bar, nbytes, pred=True):      # arrive.expect_tx: bytes to come, one arrival
        b = _bar(bar)
        b.tx += nbytes
        m.log(f"expects {nbytes} bytes on {b.name}")
        b.arrive(1)
        m.pause()

    def wait(bar, phase, pred=True, deps=()):
        b = _bar(bar)
        b._check()
        if b.passed(phase):
            m.log(f"passes {b.name} parity {phase} (already completed)")
            m.pause()
            return
        m.log(f"waits for {b.name} parity {phase}")
        m.pause(lambda: b.passed(phase),
                f"{b.name} parity {phase} ({b.completed} phases completed)")
        m.log(f"{b.name} parity {phase} passed")

    def arrive(bar, count=1, pred=True):
        b = _bar(bar)
        m.log(f"arrives on {b.name}")
        b.arrive(count)
        m.pause()

    # -- TMA
    def tma_load(desc, coord, bar, dest):
        me()
        b, slot = _bar(bar), dest.slot
        if slot.readers or slot.filling:
            raise m.fault(f"TMA copy into {slot.name} while a product, a TMA store or "
                          "another copy still uses it")
        row, col = coord
        rows, cols = desc.block_type.shape
        tile = torch.zeros(rows, cols, dtype=desc.dtype)
        part = desc.tensor[row:row + rows, col:col + cols]     # TMA fills the rest with zeros
        tile[:part.shape[0], :part.shape[1]] = part
        slot.filling = True

        def land():
            dest.data.copy_(tile)
            slot.filling, slot.written = False, True
            m.log(f"copy into {slot.name} lands (rows {row}..{row + rows - 1})")
            b.add_tx(-desc.block_type.nbytes)

        m.copies.append((f"TMA copy into {slot.name} issued at {m.where()}", land))
        m.log(f"issues a TMA copy of rows {row}..{row + rows - 1} into {slot.name}")
        m.pause()

    def tma_store(desc, coord, src):
        who, slot = me(), src.slot
        if slot in who.unfenced:
            raise m.fault(f"TMA store of {slot.name}, written since its last "
                          "fence_async_shared (the copy engine may read stale bytes)")
        row, col = coord
        slot.readers += 1
        who.stores += 1

        def land():
            out = desc.tensor[row:row + src.data.shape[0], col:col + src.data.shape[1]]
            out.copy_(src.data[:out.shape[0], :out.shape[1]])
            slot.readers -= 1
            who.stores -= 1
            m.log(f"TMA store from {slot.name} lands")

        m.copies.append((f"TMA store from {slot.name} issued at {m.where()}", land))
        m.log(f"issues a TMA store from {slot.name}")
        m.pause()

    def store_wait(pendings):
        who = me()
        m.pause(lambda: who.stores <= pendings, "its TMA stores")

    def fence_async_shared():
        me().unfenced.clear()

    # -- wgmma
    def warpgroup_mma(a, b, acc_in, use_acc=True, is_async=False, **_):
        who = me()
        smem = [x.slot for x in (a, b) if isinstance(x, _Buffer)]
        for slot in smem:
            if slot.filling or not slot.written:
                raise m.fault(f"wgmma reads {slot.name} before its TMA copy landed")
        a_regs = None if isinstance(a, _Buffer) else _unwrap(a).to(acc)
        base = _unwrap(acc_in)

        def compute():      # shared-memory operands are read when the product retires
            left = a.data.to(acc) if a_regs is None else a_regs
            product = left @ b.data.to(acc)
            return product + base if use_acc else product

        if not is_async:
            value = compute()
            m.log(f"runs a wgmma reading {', '.join(s.name for s in smem)} to its end")
            m.pause()
            return _T(value)
        token = _Pending(m, compute, smem, None if a_regs is None else a)
        for slot in smem:
            slot.readers += 1
        who.in_flight.append(token)
        operands = ([] if a_regs is None else ["registers"]) + [s.name for s in smem]
        m.log(f"issues a wgmma reading {', '.join(operands)}")
        m.pause()
        return token

    def warpgroup_mma_wait(num_outstanding=0, deps=None):
        who = me()
        while len(who.in_flight) > num_outstanding:
            token = who.in_flight.pop(0)
            token.value = token.compute()
            for slot in token.reads:
                slot.readers -= 1
            if token.registers is not None and not any(d is token.registers for d in deps):
                raise m.fault("retires a wgmma whose register operand is not among its deps: "
                              "the compiler may reuse those registers while the product reads "
                              "them")
            m.log(f"retires the wgmma reading {', '.join(s.name for s in token.reads)}")
        m.pause()
        out = []
        for dep in deps:
            if isinstance(dep, _Pending):
                if dep.value is None:
                    raise m.fault("warpgroup_mma_wait returns a product still in flight")
                dep = _T(dep.value)
            out.append(dep)
        return out[0] if len(out) == 1 else tuple(out)

    # -- register tensors
    def reduce(op):
        return lambda x, axis: _T(op(_unwrap(x), axis))

    def gl_store(ptr, value, mask=None):
        ptr.flat[_unwrap(ptr.offset)] = _unwrap(value).to(ptr.flat.dtype)

    layout = lambda *args, **kwargs: None  # noqa: E731 - layouts are the compiler's business
    gl = SimpleNamespace(
        constexpr=object, float32="float32", int64="int64", NVMMADistributedLayout=layout,
        DotOperandLayout=layout, SliceLayout=layout, NVMMASharedLayout=layout, static_range=range,
        allocate_shared_memory=allocate_shared_memory,
        program_id=lambda axis: m.program[axis],
        zeros=lambda shape, dtype, layout=None: _T(torch.zeros(shape, dtype=dt(dtype))),
        full=lambda shape, value, dtype, layout=None: _T(torch.full(shape, value,
                                                                    dtype=dt(dtype))),
        arange=lambda start, end, layout=None: _T(torch.arange(start, end)),
        maximum=lambda x, y: _T(torch.maximum(_unwrap(x), _unwrap(y))),
        max=reduce(torch.amax), sum=reduce(torch.sum),
        exp2=lambda x: _T(torch.exp2(_unwrap(x))), log2=lambda x: _T(torch.log2(_unwrap(x))),
        expand_dims=lambda x, axis: _T(_unwrap(x).unsqueeze(axis)),
        where=lambda c, x, y: _T(torch.where(_unwrap(c), _unwrap(x), _unwrap(y))),
        convert_layout=lambda x, layout: x,
        store=gl_store,
        warp_specialize=lambda partitions, warps, registers: m.run(partitions),
    )
    return {
        "gl": gl, "fence_async_shared": fence_async_shared,
        "mbarrier": SimpleNamespace(init=init, expect=expect, wait=wait, arrive=arrive,
                                    MBarrierLayout=layout),
        "tma": SimpleNamespace(store_wait=store_wait), "_tma_load": tma_load,
        "_tma_store": tma_store, "warpgroup_mma": warpgroup_mma,
        "warpgroup_mma_wait": warpgroup_mma_wait,
    }
