#!/usr/bin/env python3
"""Write the seed inputs of tests/fuzz/corpus/ for fuzz_heap.

Each seed is a readable op sequence encoded in fuzz_heap.c's input format
(byte 0: configuration; then one opcode byte per op and its argument bytes).
The encoder keeps a mirror of the harness's block table (swap-remove order)
so that block operands name the intended block.  Run it again after changing
the input format:  python3 tests/fuzz/gen_corpus.py [outdir]
"""
import os
import sys

# opcodes (op % 20 in LLVMFuzzerTestOneInput)
CREATE, ALLOC, ALIGNED, REALLOC, FREE, SIZE, VALIDATE, WALK, SUMMARY, LOCK, UNLOCK, DESTROY, MISUSE, COMPACT, TRIM = \
    0, 1, 4, 5, 7, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18
GROW, LFH, FIXED, NOSER = 0, 1, 2, 3
PROC = 4
# size_table indexes (fuzz_heap.c)
SIZES = [0, 1, 15, 16, 17, 127, 128, 129, 16383, 16384, 16385, 0xFDFFF, 0xFE000, 0xFEFFF, 0xFF000, 0x100000,
         None, None, None, None, 2**64 - 1, 2**64 - 8, 2**63 - 1, 0x7FFF8, 255, 256, 512, 1008, 4096, 0x3F400,
         0x40000, 16368]
ALIGNS = [0, 1, 8, 16, 32, 64, 128, 256, 4096, 0x4000, 0x8000, 0x10000, 0x20000, 0x100000, 3, 48]
ZERO, NOSER_CALL, EXC, KEEPZERO, INPLACE = 2, 1, 8, 16, 32


class Seq:
    def __init__(self, config=0):
        self.b = bytearray([config])
        self.blocks = []  # mirror of B[]: names
        self.heaps = {PROC}

    def _size(self, n):
        if n in SIZES:
            return [SIZES.index(n)]
        assert n < 0x110000
        return [19, n & 255, (n >> 8) & 255, n >> 16]

    def create(self, slot, kind, v=0):
        self.b += bytes([CREATE, slot | kind << 2, v])
        self.heaps.add(slot)
        return self

    def alloc(self, name, heap, size, flags=0, fails=False):
        self.b += bytes([ALLOC, heap, flags] + self._size(size))
        if not fails:
            self.blocks.append(name)
        return self

    def aligned(self, name, heap, size, align, flags=0):
        self.b += bytes([ALIGNED, heap, flags] + self._size(size) + [ALIGNS.index(align)])
        self.blocks.append(name)
        return self

    def realloc(self, name, size, flags=0):
        self.b += bytes([REALLOC, self.blocks.index(name), flags] + self._size(size))
        return self

    def free(self, name):
        i = self.blocks.index(name)
        self.b += bytes([FREE, i, 0])
        self.blocks[i] = self.blocks[-1]
        self.blocks.pop()
        return self

    def drop_heap_blocks(self, names):
        # HeapDestroy removes the heap's blocks scanning from the end (remove_block swap)
        for i in range(len(self.blocks) - 1, -1, -1):
            if self.blocks[i] in names:
                self.blocks[i] = self.blocks[-1]
                self.blocks.pop()
        return self

    def op(self, code, *args):
        self.b += bytes([code] + list(args))
        return self


def seeds():
    out = {}
    s = Seq()
    for k, n in enumerate([0, 1, 15, 16, 17, 127, 128, 129, 16383, 16384, 16385]):
        s.alloc(f"p{k}", PROC, n, ZERO if k % 2 else 0)
    s.op(WALK, PROC).op(SUMMARY, PROC).op(VALIDATE, 0).op(SIZE)
    s.realloc("p3", 5000, ZERO).realloc("p4", 0).realloc("p5", 100, INPLACE)
    s.free("p0").free("p1").op(WALK, PROC)
    out["process_heap_edges"] = s.b

    s = Seq()
    s.create(0, GROW).create(1, LFH).create(2, FIXED, 0x02).create(3, NOSER)
    for h in range(4):
        for k, n in enumerate([0, 16, 100, 4096, 16384]):
            s.alloc(f"h{h}b{k}", h, n, ZERO)
    for h in range(5):
        s.op(WALK, h).op(SUMMARY, h)
    s.op(LOCK, 1).op(LOCK, 1).op(WALK, 1).op(UNLOCK, 1).op(UNLOCK, 1).op(UNLOCK, 1)
    s.op(DESTROY, 1).op(DESTROY, 0).op(DESTROY, 2).op(DESTROY, 3)
    out["four_heaps"] = s.b

    s = Seq()
    s.create(0, GROW)
    s.alloc("a", 0, 0xFDFFF).alloc("b", 0, 0xFE000).alloc("c", 0, 0xFEFFF).alloc("d", 0, 0xFF000)
    s.alloc("e", 0, 0x100000, ZERO)
    s.realloc("a", 0xFF000).realloc("d", 100).realloc("e", 0x100000 - 1, INPLACE).realloc("b", 17, ZERO)
    s.alloc("x", 0, 2**64 - 1, fails=True).alloc("y", 0, 2**64 - 8, fails=True).alloc("z", 0, 2**63 - 1, fails=True)
    s.op(WALK, 0).op(SUMMARY, 0)
    out["large_edges"] = s.b

    s = Seq()
    s.create(2, FIXED, 0x02)  # 256 KiB fixed heap
    s.alloc("big", 2, 0x3F400).op(WALK, 2).free("big")
    s.alloc("a", 2, 0x7FFF8, fails=True).alloc("b", 2, 0x40000, fails=True).alloc("c", 2, 16384, ZERO | KEEPZERO)
    s.realloc("c", 0x3F400, ZERO).op(SUMMARY, 2).op(COMPACT, 2).op(TRIM, 2, 0)
    out["fixed_heap"] = s.b

    s = Seq()
    s.create(0, GROW)
    for k, a in enumerate([1, 8, 16, 32, 64, 4096, 0x4000, 0x8000, 0x10000, 0x20000, 0x100000]):
        s.aligned(f"a{k}", 0, 100 + k, a, ZERO)
    s.op(WALK, 0).op(VALIDATE, 0)
    out["aligned"] = s.b

    s = Seq(config=1)
    s.create(0, GROW, 1).create(1, LFH)  # slot 0 raises exceptions
    for k in range(8):
        s.alloc(f"b{k}", k % 2, 16 * k + 1)
    s.alloc("L", 0, 0x100000)
    for sub in range(7):
        s.op(MISUSE, sub, sub, sub * 3)
    out["misuse"] = s.b

    # Finding 1 (README, fuzzing): the decommitted tail of a region stayed
    # poisoned for ASan after HeapDestroy; the next mapping placed there
    # (here a new heap's header) trips ASan.  2 MiB fixed heap:
    # commit all of it, free, trim (decommits the tail), destroy, create a heap.
    s = Seq()
    for rnd in range(3):
        s.create(0, FIXED, 4)  # max 0x200000, initial 0
        s.alloc(f"f{rnd}", 0, 0xFDFFF).alloc(f"g{rnd}", 0, 0xFDFFF)  # commits all 2 MiB
        s.free(f"f{rnd}").free(f"g{rnd}").op(TRIM, 0, 0).op(DESTROY, 0)
        s.create(1, GROW).alloc(f"t{rnd}", 1, 64).op(DESTROY, 1).drop_heap_blocks([f"t{rnd}"])
    out["crashes/asan-poison-trim-destroy-min"] = s.b
    return out


def main():
    outdir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")
    os.makedirs(outdir, exist_ok=True)
    for name, data in seeds().items():
        # reproducers of findings go to crashes/ beside the corpus
        path = os.path.join(outdir, "..", name) if name.startswith("crashes/") else os.path.join(outdir, f"seed_{name}")
        with open(path, "wb") as f:
            f.write(bytes(data))
        print(f"{os.path.normpath(path)}: {len(data)} bytes")


if __name__ == "__main__":
    main()
