"""LLVM IR text of the row-table kernel (`runtime.rowtables` has the layout, the packing and the calls).

One output row at a time: the row's own 16-entry fp32 table sits in one register, ``vpermps`` turns the
codes of a block of 16 consecutive inputs (16 bytes hold two blocks' codes) into those inputs' 16 weights,
and one FMA per input row (token) multiplies them with the token's 16 inputs (a memory operand) into the
token's accumulator. At the end of the row the accumulators are summed across their lanes together
(`reduce_lines`: a transpose-add tree, 3 instructions a vector instead of ~8 for a horizontal sum each),
outlier entries first added in (`kernel_ir`), and stored, one scalar a token.
Generated per token count (one accumulator register a token, so the count is fixed in the code).
"""

from __future__ import annotations

from .panel_ir import splat

LANES = 16  # inputs a block: one 512-bit register of fp32 weights
BLOCK_BYTES = LANES // 2  # two 4-bit codes a byte

_DECLARATIONS = """
declare <16 x float> @llvm.x86.avx512.permvar.sf.512(<16 x float>, <16 x i32>)
declare <16 x float> @llvm.fma.v16f32(<16 x float>, <16 x float>, <16 x float>)
"""


def _mask(lanes: list[int]) -> str:
    return "<" + ", ".join(f"i32 {j}" for j in lanes) + ">"


def _halves(labels: list[int], offset: int) -> tuple[list[int], list[int], list[int]]:
    """Lanes of a vector (``labels``: the token each lane's partial sum belongs to; lane numbers from
    ``offset``) split into two sets pairing lanes of the same token, and the labels of their sum."""
    first, second, result = [], [], []
    for token in dict.fromkeys(labels):
        lanes = [offset + i for i, label in enumerate(labels) if label == token]
        half = len(lanes) // 2
        first += lanes[:half]
        second += lanes[half:]
        result += [token] * half
    return first, second, result


def reduce_lines(sources: dict[int, str], prefix: str, scalar: str = "float") -> tuple[list[str], str, list[int]]:
    """IR lines summing the lanes of each token's accumulator (``sources``: token -> its <16 x ``scalar``>
    value, ``scalar`` float or i32 (the int8 kernel's sums: the same tree, integer adds);
    a power of two of them, at most 16), new values named from ``prefix``: (lines, the result vector, the
    token of each of its lanes). Pairs of vectors are combined
    by two two-source shuffles and one add (each output lane adds two partial sums of one token), halving
    each token's lane count, until one vector holds them all; while a token still has several lanes (fewer
    than 16 tokens), the vector is folded onto itself, halving its width."""
    lines: list[str] = []
    plus = "fadd" if scalar == "float" else "add"
    vectors = [(value, [t] * LANES) for t, value in sources.items()]
    serial = 0
    while len(vectors) > 1:
        combined = []
        for (a, la), (b, lb) in zip(vectors[::2], vectors[1::2]):
            fa, sa, ra = _halves(la, 0)
            fb, sb, rb = _halves(lb, LANES)
            v = f"{prefix}t{serial}"
            serial += 1
            lines += [f"  {v}a = shufflevector <16 x {scalar}> {a}, <16 x {scalar}> {b}, <16 x i32> {_mask(fa + fb)}",
                      f"  {v}b = shufflevector <16 x {scalar}> {a}, <16 x {scalar}> {b}, <16 x i32> {_mask(sa + sb)}",
                      f"  {v} = {plus} <16 x {scalar}> {v}a, {v}b"]
            combined.append((v, ra + rb))
        vectors = combined
    vector, labels = vectors[0]
    width = LANES
    while len(labels) > len(set(labels)):
        first, second, labels = _halves(labels, 0)
        half, v = width // 2, f"{prefix}f{serial}"
        serial += 1
        lines += [f"  {v}a = shufflevector <{width} x {scalar}> {vector}, <{width} x {scalar}> poison, <{half} x i32> "
                  f"{_mask(first)}",
                  f"  {v}b = shufflevector <{width} x {scalar}> {vector}, <{width} x {scalar}> poison, <{half} x i32> "
                  f"{_mask(second)}",
                  f"  {v} = {plus} <{half} x {scalar}> {v}a, {v}b"]
        vector, width = v, half
    return lines, vector, labels


def _groups(tokens: int) -> list[list[int]]:
    """Tokens split into power-of-two groups of at most 16, largest first (17: 16 + 1; 24: 16 + 8)."""
    groups, start, size = [], 0, LANES
    while start < tokens:
        while size > tokens - start:
            size //= 2
        groups.append(list(range(start, start + size)))
        start += size
    return groups


def unroll(tokens: int) -> int:
    """Accumulators a token sums into: with few tokens, several (block b of a loop iteration into accumulator
    b mod this), so enough independent FMA chains hide the FMA latency (8: two FMA ports x 4 cycles)."""
    return max(1, min(BLOCK_MULTIPLE, 8 // tokens))


def per_iteration(tokens: int) -> int:
    """Blocks a loop iteration takes: whole pairs (one 16-byte load of codes decodes two blocks), and one
    per accumulator; `BLOCK_MULTIPLE` is a multiple of it."""
    return max(PAIR, unroll(tokens))


PAIR = 2  # blocks whose codes share 16 bytes: byte j holds input j (low nibble) and input j + 16 (high)
BLOCK_MULTIPLE = 4  # a layer's blocks (and each call's run of them) pad to a multiple of this


def kernel_name(tokens: int) -> str:
    return f"deepzip_rowtables_fp32_{tokens}"


def _outlier_range(add) -> None:
    """%j0 / %j1: row %r's entries in the outliers' CSR (its row pointers ``%oindptr``)."""
    add("  %jp0 = getelementptr i32, ptr %oindptr, i64 %r")
    add("  %j0w = load i32, ptr %jp0, align 4")
    add("  %jp1 = getelementptr i32, ptr %jp0, i64 1")
    add("  %j1w = load i32, ptr %jp1, align 4")
    add("  %j0 = sext i32 %j0w to i64")
    add("  %j1 = sext i32 %j1w to i64")


def _next_row(add) -> None:
    """The end of both kernels' loop over output rows: on to row r + 1 (the loop's head checks the bound),
    and the exit block."""
    add("  %rnext = add i64 %r, 1")
    add("  br label %row")
    add("done:")
    add("  ret void")
    add("}")


def kernel_ir(tokens: int) -> str:
    """LLVM IR of the kernel for ``tokens`` input rows (1..MAX_BLOCK), one accumulator register a token
    (several with few tokens, `unroll`):

    void f(u8* codes, i64 cstride, float* tables, i64 tstride, float* xb, i64 blocks, i64 r0, i64 r1,
           float* bias (or null), float* out, i64 ldo, i64 accumulate,
           i32* oindptr, i32* ocols, float* ovalues, i64 kbase)

    computes outputs r0..r1-1 of out[0:tokens, :] (row stride ``ldo``) over ``blocks`` blocks of inputs (a
    multiple of `BLOCK_MULTIPLE`), one scalar store a token and output (a vector store of a row's sums into
    a transposed buffer measured no faster in the kernel, and its transpose costs ~4 us at 17 x 384).
    Output r's codes are 16 bytes a pair of blocks (`PAIR`) from codes + cstride * r, its table the 16
    floats at tables + tstride * r (0: one table for all); ``xb`` holds the inputs block-major: block k's 16 inputs of
    token t at xb + 16 * (tokens * k + t), so every input load is one pointer plus a constant.
    ``accumulate`` nonzero: the sums are added to ``out`` (a later run of blocks) instead of stored.

    Exact outliers: a CSR term (``oindptr``, int32 columns ``ocols``, ``ovalues``: exact minus the codes'
    value) added into the accumulators before the reduction, the entries of row r whose block lies in
    this run (blocks kbase.. of the row; ``xb`` starts at block kbase) one vector each: the value in its
    column's lane, times the block's inputs, one FMA a token. No outliers: ``oindptr`` all zeros.
    """
    per, accs = per_iteration(tokens), unroll(tokens)
    accumulators = [(t, u) for t in range(tokens) for u in range(accs)]
    lines = [_DECLARATIONS]
    add = lines.append
    add(f"define void @{kernel_name(tokens)}(ptr noalias %codes, i64 %cstride, ptr noalias %tables, i64 %tstride, "
        "ptr noalias %xb, i64 %blocks, i64 %r0, i64 %r1, ptr noalias %bias, ptr noalias %out, i64 %ldo, "
        "i64 %accumulate, ptr noalias %oindptr, ptr noalias %ocols, ptr noalias %ovalues, i64 %kbase) nounwind {")
    add("entry:")
    add("  %hasbias = icmp ne ptr %bias, null")
    add("  %adding = icmp ne i64 %accumulate, 0")
    add("  br label %row")
    add("row:")
    add("  %r = phi i64 [%r0, %entry], [%rnext, %next]")
    add("  %more = icmp slt i64 %r, %r1")
    add("  br i1 %more, label %start, label %done")
    add("start:")  # this row's table, codes and outlier entries
    add("  %toff = mul i64 %r, %tstride")
    add("  %tptr = getelementptr float, ptr %tables, i64 %toff")
    add("  %table = load <16 x float>, ptr %tptr, align 4")
    add("  %coff = mul i64 %r, %cstride")
    add("  %cfirst = getelementptr i8, ptr %codes, i64 %coff")
    _outlier_range(add)
    add("  br label %block")
    add("block:")
    add("  %k = phi i64 [0, %start], [%knext, %block]")
    add("  %xptr = phi ptr [%xb, %start], [%xnext, %block]")
    add("  %cptr = phi ptr [%cfirst, %start], [%cnext, %block]")
    for t, u in accumulators:
        add(f"  %acc{t}_{u} = phi <16 x float> [zeroinitializer, %start], [%last{t}_{u}, %block]")
    current = {(t, u): f"%acc{t}_{u}" for t, u in accumulators}
    for pair in range(per // PAIR):
        # 16 bytes -> 16 x i32 (one vpmovzxbd): each lane's low 4 bits are input j's code, vpermps reads only
        # those; shifted right by 4, input j + 16's: two blocks' weights from one load and three instructions
        add(f"  %cp{pair} = getelementptr i8, ptr %cptr, i64 {PAIR * BLOCK_BYTES * pair}")
        add(f"  %c{pair} = load <16 x i8>, ptr %cp{pair}, align 1")
        add(f"  %idx{pair}_0 = zext <16 x i8> %c{pair} to <16 x i32>")
        add(f"  %idx{pair}_1 = lshr <16 x i32> %idx{pair}_0, <" + ", ".join(["i32 4"] * LANES) + ">")
        for half in range(PAIR):
            b = PAIR * pair + half  # the block within the iteration
            add(f"  %w{b} = call <16 x float> @llvm.x86.avx512.permvar.sf.512(<16 x float> %table, "
                f"<16 x i32> %idx{pair}_{half})")
            for t in range(tokens):
                u = b % accs
                add(f"  %xp{t}_{b} = getelementptr float, ptr %xptr, i64 {LANES * (tokens * b + t)}")
                add(f"  %xv{t}_{b} = load <16 x float>, ptr %xp{t}_{b}, align 64")
                add(f"  %next{t}_{b} = call <16 x float> @llvm.fma.v16f32(<16 x float> %w{b}, <16 x float> %xv{t}_{b}, "
                    f"<16 x float> {current[t, u]})")
                current[t, u] = f"%next{t}_{b}"
    for (t, u), value in current.items():  # named for the phis (an add of -0.0 is folded away)
        add(f"  %last{t}_{u} = fadd <16 x float> {value}, <" + ", ".join(["float -0.0"] * LANES) + ">")
    add(f"  %cnext = getelementptr i8, ptr %cptr, i64 {BLOCK_BYTES * per}")
    add(f"  %xnext = getelementptr float, ptr %xptr, i64 {LANES * tokens * per}")
    add(f"  %knext = add i64 %k, {per}")
    add("  %again = icmp slt i64 %knext, %blocks")
    add("  br i1 %again, label %block, label %fix")
    add("fix:")  # the row's outlier entries, into the first accumulator of each token
    add("  %j = phi i64 [%j0, %block], [%jnext, %fixnext]")
    for t in range(tokens):
        add(f"  %fix{t} = phi <16 x float> [%last{t}_0, %block], [%fixed{t}, %fixnext]")
    add("  %fmore = icmp slt i64 %j, %j1")
    add("  br i1 %fmore, label %fixbody, label %store")
    add("fixbody:")
    add("  %colp = getelementptr i32, ptr %ocols, i64 %j")
    add("  %colw = load i32, ptr %colp, align 4")
    add("  %col = zext i32 %colw to i64")
    add("  %kabs = lshr i64 %col, 4")
    add("  %krel = sub i64 %kabs, %kbase")
    add("  %inrun = icmp ult i64 %krel, %blocks")  # its block is in this run (unsigned: below kbase wraps)
    add("  br i1 %inrun, label %fixadd, label %fixnext")
    add("fixadd:")
    add("  %valp = getelementptr float, ptr %ovalues, i64 %j")
    add("  %val = load float, ptr %valp, align 4")
    add("  %lane = and i32 %colw, 15")
    add("  %bit = shl i32 1, %lane")
    add("  %bit16 = trunc i32 %bit to i16")
    add("  %lanes = bitcast i16 %bit16 to <16 x i1>")
    add("  %vi = insertelement <16 x float> poison, float %val, i64 0")
    add("  %vs = shufflevector <16 x float> %vi, <16 x float> poison, <16 x i32> zeroinitializer")
    # only its lane takes the product (a masked FMA): 0 * inf in the other lanes would make NaN of an inf input
    add(f"  %xoff = mul i64 %krel, {LANES * tokens}")
    add("  %xk = getelementptr float, ptr %xb, i64 %xoff")
    for t in range(tokens):
        add(f"  %fxp{t} = getelementptr float, ptr %xk, i64 {LANES * t}")
        add(f"  %fxv{t} = load <16 x float>, ptr %fxp{t}, align 64")
        add(f"  %fma{t} = call <16 x float> @llvm.fma.v16f32(<16 x float> %vs, <16 x float> %fxv{t}, "
            f"<16 x float> %fix{t})")
        add(f"  %fadd{t} = select <16 x i1> %lanes, <16 x float> %fma{t}, <16 x float> %fix{t}")
    add("  br label %fixnext")
    add("fixnext:")
    for t in range(tokens):
        add(f"  %fixed{t} = phi <16 x float> [%fix{t}, %fixbody], [%fadd{t}, %fixadd]")
    add("  %jnext = add i64 %j, 1")
    add("  br label %fix")
    add("store:")  # each token's accumulators summed, then across lanes, plus the bias: out[t, r]
    add("  br i1 %hasbias, label %withbias, label %nobias")
    add("withbias:")
    add("  %bptr = getelementptr float, ptr %bias, i64 %r")
    add("  %bload = load float, ptr %bptr, align 4")
    add("  br label %sums")
    add("nobias:")
    add("  br label %sums")
    add("sums:")
    add("  %b = phi float [%bload, %withbias], [0.0, %nobias]")
    sums = {}
    for t in range(tokens):
        total = f"%fix{t}"
        for u in range(1, accs):
            add(f"  %part{t}_{u} = fadd <16 x float> {total}, %last{t}_{u}")
            total = f"%part{t}_{u}"
        sums[t] = total
    stores = []  # (pointer, value) of each token
    for g, group in enumerate(_groups(tokens)):
        v = f"%g{g}"
        reduced, vector, labels = reduce_lines({t: sums[t] for t in group}, f"{v}_")
        lines += reduced
        width = len(labels)
        kind = f"<{width} x float>"
        add(f"  {v}bi = insertelement {kind} poison, float %b, i64 0")
        add(f"  {v}bv = shufflevector {kind} {v}bi, {kind} poison, <{width} x i32> zeroinitializer")
        add(f"  {v}y = fadd {kind} {vector}, {v}bv")
        for lane, t in enumerate(labels):
            add(f"  %y{t} = extractelement {kind} {v}y, i64 {lane}")
            add(f"  %orow{t} = mul i64 %ldo, {t}")
            add(f"  %oat{t} = add i64 %orow{t}, %r")
            add(f"  %optr{t} = getelementptr float, ptr %out, i64 %oat{t}")
            stores.append((f"%optr{t}", f"%y{t}"))
    add("  br i1 %adding, label %adds, label %puts")
    add("puts:")  # the first (or only) run of blocks: out holds nothing yet (never read: it may hold anything)
    for pointer, value in stores:
        add(f"  store float {value}, ptr {pointer}, align 4")
    add("  br label %next")
    add("adds:")
    for i, (pointer, value) in enumerate(stores):
        add(f"  %old{i} = load float, ptr {pointer}, align 4")
        add(f"  %plus{i} = fadd float {value}, %old{i}")
        add(f"  store float %plus{i}, ptr {pointer}, align 4")
    add("  br label %next")
    add("next:")
    _next_row(add)
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------ int8 kernel

CHUNK = 64  # inputs an int8 step takes: one 512-bit register of int8 weights
CHUNK_BYTES = CHUNK // 2  # byte j: input j's code (low nibble), input j + 32's (high nibble)

_INT8_DECLARATIONS = """
declare <64 x i8> @llvm.x86.avx512.pshuf.b.512(<64 x i8>, <64 x i8>)
declare <16 x i32> @llvm.x86.avx512.vpdpbusd.512(<16 x i32>, <64 x i8>, <64 x i8>)
"""


def int8_unroll(tokens: int) -> int:
    """Accumulators a token sums into, rotated each chunk: vpdpbusd's latency (5 cycles) needs about 8
    independent chains in flight; rotating (not unrolling) them keeps a layer's chunks unpadded."""
    return max(1, min(4, 8 // tokens))


def int8_kernel_name(tokens: int) -> str:
    return f"deepzip_rowtables_int8_{tokens}"


def int8_kernel_ir(tokens: int) -> str:
    """LLVM IR of the int8 kernel for ``tokens`` input rows (1..MAX_BLOCK):

    void f(u8* codes, i64 cstride, i8* luts, i64 lstride, u8* xq, i64 chunks, i64 r0, i64 r1,
           i32* correction, float* wscale, float* xscale, float* bias (or null), float* out, i64 ldo,
           i32* oindptr, i32* ocols, float* ovalues, float* xt)

    computes outputs r0..r1-1 of out[0:tokens, :] (row stride ``ldo``). Output r's codes are `CHUNK_BYTES`
    a chunk of 64 inputs from codes + cstride * r; its table is the 64 bytes at luts + lstride * r (0: one
    for all): the row's 16 int8 levels in each 128-bit lane, as ``vpshufb`` looks up within a lane. ``xq``
    holds the quantized inputs (int8 + 128, uint8) chunk-major: chunk c of token t at xq + 64 * (tokens * c
    + t). Per chunk: and, shift and a concatenation make 64 indices of 32 code bytes, one ``vpshufb`` the
    64 int8 weights, one ``vpdpbusd`` a token (four uint8 x int8 products a lane) adds into its int32
    accumulator. The row's sums are reduced across lanes as the fp32 kernel's (`reduce_lines`, on i32),
    then out[t, r] = xscale[t] * (wscale[r] * float(sum - correction[r])) + bias[r], where correction[r] =
    128 * the row's int8 weights' sum (over padded chunks too: padded inputs are 128, adding 128 * w).
    The subtraction is in int32, exact (`panels.INT8_MAX_WIDTH` bounds the width).

    Exact outliers: a CSR term in fp32 (``oindptr``, int32 ``ocols``, ``ovalues``: exact minus the
    dequantized code), added to the row's scaled outputs before the store: per entry, the value times the
    fp32 inputs of its column for every token at once (``xt``: the inputs transposed, (width, tokens), so a
    column's tokens are one vector load, shuffled into the reduction's lane order). No outliers: ``oindptr``
    all zeros (``xt`` never read).
    """
    accs = int8_unroll(tokens)
    lines = [_INT8_DECLARATIONS]
    add = lines.append
    add(f"define void @{int8_kernel_name(tokens)}(ptr noalias %codes, i64 %cstride, ptr noalias %luts, i64 %lstride, "
        "ptr noalias %xq, i64 %chunks, i64 %r0, i64 %r1, ptr noalias %correction, ptr noalias %wscale, "
        "ptr noalias %xscale, ptr noalias %bias, ptr noalias %out, i64 %ldo, ptr noalias %oindptr, ptr noalias %ocols, "
        "ptr noalias %ovalues, ptr noalias %xt) nounwind {")
    add("entry:")
    add("  %hasbias = icmp ne ptr %bias, null")
    add("  br label %row")
    add("row:")
    add("  %r = phi i64 [%r0, %entry], [%rnext, %put]")
    add("  %more = icmp slt i64 %r, %r1")
    add("  br i1 %more, label %start, label %done")
    add("start:")
    add("  %loff = mul i64 %r, %lstride")
    add("  %lptr = getelementptr i8, ptr %luts, i64 %loff")
    add("  %lut = load <64 x i8>, ptr %lptr, align 1")
    add("  %coff = mul i64 %r, %cstride")
    add("  %cfirst = getelementptr i8, ptr %codes, i64 %coff")
    add("  br label %chunk")
    add("chunk:")
    add("  %k = phi i64 [0, %start], [%knext, %chunk]")
    add("  %xptr = phi ptr [%xq, %start], [%xnext, %chunk]")
    add("  %cptr = phi ptr [%cfirst, %start], [%cnext, %chunk]")
    for t in range(tokens):
        for u in range(accs):  # accumulator u takes u + 1's value next chunk, the last one the new sum
            later = f"%acc{t}_{u + 1}" if u + 1 < accs else f"%sum{t}"
            add(f"  %acc{t}_{u} = phi <16 x i32> [zeroinitializer, %start], [{later}, %chunk]")
    add(f"  %c = load <{CHUNK_BYTES} x i8>, ptr %cptr, align 1")
    add(f"  %lo = and <{CHUNK_BYTES} x i8> %c, {splat(CHUNK_BYTES, 15, 'i8')}")
    add(f"  %hi = lshr <{CHUNK_BYTES} x i8> %c, {splat(CHUNK_BYTES, 4, 'i8')}")
    add(f"  %idx = shufflevector <{CHUNK_BYTES} x i8> %lo, <{CHUNK_BYTES} x i8> %hi, "
        f"<64 x i32> {_mask(list(range(CHUNK)))}")
    add("  %w = call <64 x i8> @llvm.x86.avx512.pshuf.b.512(<64 x i8> %lut, <64 x i8> %idx)")
    for t in range(tokens):
        add(f"  %xp{t} = getelementptr i8, ptr %xptr, i64 {CHUNK * t}")
        add(f"  %xv{t} = load <64 x i8>, ptr %xp{t}, align 64")
        add(f"  %sum{t} = call <16 x i32> @llvm.x86.avx512.vpdpbusd.512(<16 x i32> %acc{t}_0, <64 x i8> %xv{t}, "
            "<64 x i8> %w)")
    add(f"  %cnext = getelementptr i8, ptr %cptr, i64 {CHUNK_BYTES}")
    add(f"  %xnext = getelementptr i8, ptr %xptr, i64 {CHUNK * tokens}")
    add("  %knext = add i64 %k, 1")
    add("  %again = icmp slt i64 %knext, %chunks")
    add("  br i1 %again, label %chunk, label %store")
    add("store:")
    add("  %cp = getelementptr i32, ptr %correction, i64 %r")
    add("  %corr = load i32, ptr %cp, align 4")
    add("  %wp = getelementptr float, ptr %wscale, i64 %r")
    add("  %ws = load float, ptr %wp, align 4")
    add("  %bp = getelementptr float, ptr %bias, i64 %r")
    add("  %bsafe = select i1 %hasbias, ptr %bp, ptr %wscale")  # no bias: a harmless load, replaced by 0
    add("  %bload = load float, ptr %bsafe, align 4")
    add("  %b = select i1 %hasbias, float %bload, float 0.0")
    sums = {}
    for t in range(tokens):  # the exit values: the last chunk's sum and the accumulators it did not feed
        total = f"%sum{t}"
        for u in range(1, accs):
            add(f"  %part{t}_{u} = add <16 x i32> {total}, %acc{t}_{u}")
            total = f"%part{t}_{u}"
        sums[t] = total
    _outlier_range(add)
    groups = []  # (value, width, first token, lane order) of each group's outputs
    for g, group in enumerate(_groups(tokens)):
        v = f"%g{g}"
        reduced, vector, labels = reduce_lines({t: sums[t] for t in group}, f"{v}_", "i32")
        lines += reduced
        width = len(labels)
        kind = f"<{width} x float>"
        order = _mask([t - group[0] for t in labels])  # a vector of the group's tokens, in the lanes' order
        add(f"  {v}ci = insertelement <{width} x i32> poison, i32 %corr, i64 0")
        add(f"  {v}cv = shufflevector <{width} x i32> {v}ci, <{width} x i32> poison, <{width} x i32> zeroinitializer")
        add(f"  {v}d = sub <{width} x i32> {vector}, {v}cv")
        add(f"  {v}f = sitofp <{width} x i32> {v}d to {kind}")
        add(f"  {v}wi = insertelement {kind} poison, float %ws, i64 0")
        add(f"  {v}wv = shufflevector {kind} {v}wi, {kind} poison, <{width} x i32> zeroinitializer")
        add(f"  {v}e = fmul {kind} {v}f, {v}wv")
        add(f"  {v}xsp = getelementptr float, ptr %xscale, i64 {group[0]}")
        add(f"  {v}xsl = load {kind}, ptr {v}xsp, align 4")
        add(f"  {v}xs = shufflevector {kind} {v}xsl, {kind} poison, <{width} x i32> {order}")
        add(f"  {v}s = fmul {kind} {v}e, {v}xs")
        add(f"  {v}bi = insertelement {kind} poison, float %b, i64 0")
        add(f"  {v}bv = shufflevector {kind} {v}bi, {kind} poison, <{width} x i32> zeroinitializer")
        add(f"  {v}y = fadd {kind} {v}s, {v}bv")
        groups.append((v, width, group[0], order, labels))
    add("  br label %fix")
    add("fix:")  # the row's outlier entries, in fp32
    add("  %j = phi i64 [%j0, %store], [%jnext, %fixbody]")
    for v, width, _, _, _ in groups:
        add(f"  {v}o = phi <{width} x float> [{v}y, %store], [{v}n, %fixbody]")
    add("  %fmore = icmp slt i64 %j, %j1")
    add("  br i1 %fmore, label %fixbody, label %put")
    add("fixbody:")
    add("  %colp = getelementptr i32, ptr %ocols, i64 %j")
    add("  %colw = load i32, ptr %colp, align 4")
    add("  %col = zext i32 %colw to i64")
    add(f"  %xcol = mul i64 %col, {tokens}")
    add("  %valp = getelementptr float, ptr %ovalues, i64 %j")
    add("  %val = load float, ptr %valp, align 4")
    for v, width, first, order, _ in groups:
        kind = f"<{width} x float>"
        add(f"  {v}xo = add i64 %xcol, {first}")
        add(f"  {v}xp = getelementptr float, ptr %xt, i64 {v}xo")
        add(f"  {v}xl = load {kind}, ptr {v}xp, align 4")
        add(f"  {v}xv = shufflevector {kind} {v}xl, {kind} poison, <{width} x i32> {order}")
        add(f"  {v}vi = insertelement {kind} poison, float %val, i64 0")
        add(f"  {v}vv = shufflevector {kind} {v}vi, {kind} poison, <{width} x i32> zeroinitializer")
        add(f"  {v}m = fmul {kind} {v}vv, {v}xv")
        add(f"  {v}n = fadd {kind} {v}o, {v}m")
    add("  %jnext = add i64 %j, 1")
    add("  br label %fix")
    add("put:")
    for v, width, _, _, labels in groups:
        for lane, t in enumerate(labels):
            add(f"  %y{t} = extractelement <{width} x float> {v}o, i64 {lane}")
            add(f"  %orow{t} = mul i64 %ldo, {t}")
            add(f"  %oat{t} = add i64 %orow{t}, %r")
            add(f"  %optr{t} = getelementptr float, ptr %out, i64 %oat{t}")
            add(f"  store float %y{t}, ptr %optr{t}, align 4")
    _next_row(add)
    return "\n".join(lines)
