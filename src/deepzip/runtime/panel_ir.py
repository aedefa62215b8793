"""LLVM IR text of the panel kernels (`runtime.panels` has the layout, the packing and the calls).

Generated per input-row count (one accumulator register a row, so the count is fixed in the code) and
compiled by `runtime.jit` for this CPU. Three kernels, each computing panels p0..p1-1 of a layer:

- `kernel_ir("fp32", rows)`: the codebook in one register, ``vpermps`` turns a step's 8 code bytes into 16
  fp32 weights, one broadcast FMA a row;
- `kernel_ir("int8", rows)`: the int8 codebook replicated in each 128-bit lane, ``vpshufb`` turns 32 code
  bytes into 64 int8 weights, one ``vpdpbusd`` a row (four products a lane), the scaled store;
- `amx_kernel_ir(tiles)`: the same lookups written as AMX B tiles, one ``tdpbusd`` per 16 rows.
"""

from __future__ import annotations

PANEL = 16  # outputs a panel: one 512-bit register of fp32 or int32 sums
STEP = {"fp32": 1, "int8": 4}  # inputs a step


def splat(count: int, value, kind: str = "i32") -> str:
    """An LLVM IR constant vector of ``count`` copies of ``value`` (of type ``kind``)."""
    return "<" + ", ".join([f"{kind} {value}"] * count) + ">"


def _sequence(count: int) -> str:
    return "<" + ", ".join(f"i32 {j}" for j in range(count)) + ">"


_DECLARATIONS = """
declare <16 x float> @llvm.x86.avx512.permvar.sf.512(<16 x float>, <16 x i32>)
declare <64 x i8> @llvm.x86.avx512.pshuf.b.512(<64 x i8>, <64 x i8>)
declare <16 x i32> @llvm.x86.avx512.vpdpbusd.512(<16 x i32>, <64 x i8>, <64 x i8>)
declare <16 x float> @llvm.fma.v16f32(<16 x float>, <16 x float>, <16 x float>)
declare <16 x float> @llvm.masked.load.v16f32.p0(ptr, i32, <16 x i1>, <16 x float>)
declare void @llvm.masked.store.v16f32.p0(<16 x float>, ptr, i32, <16 x i1>)
"""


def kernel_name(precision: str, rows: int) -> str:
    return f"deepzip_panels_{precision}_{rows}"


def kernel_ir(precision: str, rows: int) -> str:
    """LLVM IR of the kernel for ``rows`` input rows (1..MAX_BLOCK), one accumulator register a row:

    void f(u8* codes, lut, xt, i64 ldx, i64 steps, i64 p0, i64 p1, float* bias (or null), float* out,
           i64 ldo, i64 n_valid, float* scale, float* correction)

    computes panels p0..p1-1 of out[0:rows, :] (row stride ``ldo``, columns < n_valid stored) from
    ``xt``: the inputs transposed, step-major (``ldx`` apart), fp32 (fp32) or four uint8 (int8: q + 128)
    a row and step. int8 only: out = scale[row] * (sum - correction[col]) + bias, where the correction is
    128 times the column's int8 weight sum (the +128 that made the inputs unsigned).
    """
    int8 = precision == "int8"
    code_bytes = PANEL * STEP[precision] // 2
    lines = [_DECLARATIONS]
    add = lines.append
    add(f"define void @{kernel_name(precision, rows)}(ptr noalias %codes, ptr noalias %lut, ptr noalias %xt, "
        "i64 %ldx, i64 %steps, i64 %p0, i64 %p1, ptr noalias %bias, ptr noalias %out, i64 %ldo, i64 %nvalid, "
        "ptr noalias %scale, ptr noalias %correction) nounwind {")
    add("entry:")
    add("  %lutv = load <64 x i8>, ptr %lut, align 1" if int8 else "  %lutv = load <16 x float>, ptr %lut, align 4")
    add("  %hasbias = icmp ne ptr %bias, null")
    add("  %nv0 = insertelement <16 x i64> poison, i64 %nvalid, i64 0")
    add("  %nv = shufflevector <16 x i64> %nv0, <16 x i64> poison, <16 x i32> zeroinitializer")
    add("  br label %panel")
    add("panel:")
    add("  %p = phi i64 [%p0, %entry], [%pnext, %store]")
    add("  %more = icmp slt i64 %p, %p1")
    add("  br i1 %more, label %start, label %done")
    add("start:")  # this panel's columns, which of them exist, and its bias
    add(f"  %col = mul i64 %p, {PANEL}")
    add("  %col0 = insertelement <16 x i64> poison, i64 %col, i64 0")
    add("  %colv = shufflevector <16 x i64> %col0, <16 x i64> poison, <16 x i32> zeroinitializer")
    add("  %cols = add <16 x i64> %colv, <" + ", ".join(f"i64 {j}" for j in range(PANEL)) + ">")
    add("  %valid = icmp slt <16 x i64> %cols, %nv")
    add("  %bptr = getelementptr float, ptr %bias, i64 %col")
    add("  br i1 %hasbias, label %withbias, label %nobias")
    add("withbias:")
    add("  %bv = call <16 x float> @llvm.masked.load.v16f32.p0(ptr %bptr, i32 4, <16 x i1> %valid, "
        "<16 x float> zeroinitializer)")
    add("  br label %init")
    add("nobias:")
    add("  br label %init")
    add("init:")
    add("  %b = phi <16 x float> [%bv, %withbias], [zeroinitializer, %nobias]")
    add("  %panelbytes = mul i64 %steps, " + str(code_bytes))
    add("  %coff = mul i64 %p, %panelbytes")
    add("  %cfirst = getelementptr i8, ptr %codes, i64 %coff")
    add("  br label %step")
    add("step:")
    add("  %k = phi i64 [0, %init], [%knext, %step]")
    add("  %cptr = phi ptr [%cfirst, %init], [%cnext, %step]")
    add("  %xptr = phi ptr [%xt, %init], [%xnext, %step]")
    start = "zeroinitializer" if int8 else "%b"
    kind = "<16 x i32>" if int8 else "<16 x float>"
    for r in range(rows):
        add(f"  %acc{r} = phi {kind} [{start}, %init], [%next{r}, %step]")
    if int8:  # 32 bytes -> 64 four-bit codes -> 64 int8 weights by one in-register lookup per 16 codes
        add("  %c = load <32 x i8>, ptr %cptr, align 1")
        add(f"  %lo = and <32 x i8> %c, {splat(32, 15, 'i8')}")
        add(f"  %hi = lshr <32 x i8> %c, {splat(32, 4, 'i8')}")
        add(f"  %idx = shufflevector <32 x i8> %lo, <32 x i8> %hi, <64 x i32> {_sequence(64)}")
        add("  %w = call <64 x i8> @llvm.x86.avx512.pshuf.b.512(<64 x i8> %lutv, <64 x i8> %idx)")
    else:  # 8 bytes -> 16 codes -> 16 fp32 weights by one in-register lookup
        add("  %c = load <8 x i8>, ptr %cptr, align 1")
        add("  %cw = zext <8 x i8> %c to <8 x i32>")
        add(f"  %lo = and <8 x i32> %cw, {splat(8, 15)}")
        add(f"  %hi = lshr <8 x i32> %cw, {splat(8, 4)}")
        add(f"  %idx = shufflevector <8 x i32> %lo, <8 x i32> %hi, <16 x i32> {_sequence(16)}")
        add("  %w = call <16 x float> @llvm.x86.avx512.permvar.sf.512(<16 x float> %lutv, <16 x i32> %idx)")
    for r in range(rows):  # one broadcast input (fp32, or 4 uint8) into each row's accumulator
        add(f"  %xp{r} = getelementptr i32, ptr %xptr, i64 {r}")
        add(f"  %xs{r} = load {'i32' if int8 else 'float'}, ptr %xp{r}, align 4")
        if int8:
            add(f"  %xi{r} = insertelement <16 x i32> poison, i32 %xs{r}, i64 0")
            add(f"  %xb{r} = shufflevector <16 x i32> %xi{r}, <16 x i32> poison, <16 x i32> zeroinitializer")
            add(f"  %xv{r} = bitcast <16 x i32> %xb{r} to <64 x i8>")
            add(f"  %next{r} = call <16 x i32> @llvm.x86.avx512.vpdpbusd.512(<16 x i32> %acc{r}, <64 x i8> %xv{r}, "
                "<64 x i8> %w)")
        else:
            add(f"  %xi{r} = insertelement <16 x float> poison, float %xs{r}, i64 0")
            add(f"  %xv{r} = shufflevector <16 x float> %xi{r}, <16 x float> poison, <16 x i32> zeroinitializer")
            add(f"  %next{r} = call <16 x float> @llvm.fma.v16f32(<16 x float> %xv{r}, <16 x float> %w, "
                f"<16 x float> %acc{r})")
    add(f"  %cnext = getelementptr i8, ptr %cptr, i64 {code_bytes}")
    add("  %xnext = getelementptr i32, ptr %xptr, i64 %ldx")
    add("  %knext = add i64 %k, 1")
    add("  %again = icmp slt i64 %knext, %steps")
    add("  br i1 %again, label %step, label %store")
    add("store:")
    if int8:
        add("  %corrptr = getelementptr float, ptr %correction, i64 %col")
        add("  %corr = load <16 x float>, ptr %corrptr, align 4")
    for r in range(rows):
        value = f"%next{r}"
        if int8:  # scale[r] * (sum - correction) + bias
            add(f"  %f{r} = sitofp <16 x i32> %next{r} to <16 x float>")
            add(f"  %d{r} = fsub <16 x float> %f{r}, %corr")
            add(f"  %sp{r} = getelementptr float, ptr %scale, i64 {r}")
            add(f"  %s{r} = load float, ptr %sp{r}, align 4")
            add(f"  %si{r} = insertelement <16 x float> poison, float %s{r}, i64 0")
            add(f"  %sv{r} = shufflevector <16 x float> %si{r}, <16 x float> poison, <16 x i32> zeroinitializer")
            add(f"  %y{r} = call <16 x float> @llvm.fma.v16f32(<16 x float> %d{r}, <16 x float> %sv{r}, <16 x float> %b)")
            value = f"%y{r}"
        add(f"  %orow{r} = mul i64 %ldo, {r}")
        add(f"  %oat{r} = add i64 %orow{r}, %col")
        add(f"  %optr{r} = getelementptr float, ptr %out, i64 %oat{r}")
        add(f"  call void @llvm.masked.store.v16f32.p0(<16 x float> {value}, ptr %optr{r}, i32 4, <16 x i1> %valid)")
    add("  %pnext = add i64 %p, 1")
    add("  br label %panel")
    add("done:")
    add("  ret void")
    add("}")
    return "\n".join(lines)


_AMX_DECLARATIONS = """
declare <64 x i8> @llvm.x86.avx512.pshuf.b.512(<64 x i8>, <64 x i8>)
declare <16 x float> @llvm.fma.v16f32(<16 x float>, <16 x float>, <16 x float>)
declare <16 x float> @llvm.masked.load.v16f32.p0(ptr, i32, <16 x i1>, <16 x float>)
declare void @llvm.masked.store.v16f32.p0(<16 x float>, ptr, i32, <16 x i1>)
declare x86_amx @llvm.x86.tileloadd64.internal(i16, i16, ptr, i64)
declare x86_amx @llvm.x86.tdpbusd.internal(i16, i16, i16, x86_amx, x86_amx, x86_amx)
declare void @llvm.x86.tilestored64.internal(i16, i16, ptr, i64, x86_amx)
declare x86_amx @llvm.x86.tilezero.internal(i16, i16)
"""


def amx_kernel_name(tiles: int) -> str:
    return f"deepzip_panels_amx_{tiles}"


def amx_kernel_ir(tiles: int) -> str:
    """LLVM IR of the int8 kernel on AMX tiles for up to 16 (``tiles`` 1) or 32 (2) input rows:

    void f(u8* codes, lut, u8* xq, i64 ldx, i64 steps, i64 p0, i64 p1, i32* sums, i64 ldsums, i64 rows)

    writes the int32 sums of panels p0..p1-1 into ``sums`` (rows x padded outputs, ``ldsums`` bytes
    apart); `_finish_int8` turns them into outputs. ``xq``: the quantized rows as they are (row-major,
    ``ldx`` bytes apart, a multiple of 64). Two panels at a time (p0, p1 even: int8 codes pad to an even
    number of panels), per chunk of 16 steps (64 inputs): each panel's chunk of codes is looked up
    (``vpshufb``) into a 1 KB buffer that is exactly AMX's B tile (16 rows of 4 inputs x 16 outputs: the
    int8 panel layout), and one ``tdpbusd`` per 16 input rows and panel adds the 16 x 16 x 64 products
    into that panel's int32 tile (8 tiles: 4 sums, 2 B, 2 A). Software-pipelined: the lookups of chunk
    c + 1 are written (to the other of two buffers) before chunk c's B tile loads, so a tile load never
    waits for stores just issued (a tile load takes nothing from the store buffer).
    """
    pair = (0, 1)
    row_tiles = range(tiles)
    lines = [_AMX_DECLARATIONS]
    add = lines.append

    def decode(chunk: str, tag: str) -> None:
        """Both panels' lookups of chunk ``chunk`` (an i64 value) into the buffers of its parity."""
        add(f"  %par{tag} = and i64 {chunk}, 1")
        add(f"  %boff{tag} = mul i64 %par{tag}, 2048")
        add(f"  %bset{tag} = getelementptr i8, ptr %buffers, i64 %boff{tag}")
        add(f"  %chb{tag} = mul i64 {chunk}, 512")  # 16 steps of 32 code bytes
        for q in pair:
            add(f"  %cptr{q}{tag} = getelementptr i8, ptr %cfirst{q}, i64 %chb{tag}")
            for step in range(16):  # the chunk's 16 steps: 64 int8 weights each, one B tile row
                v = f"{q}_{step}{tag}"
                add(f"  %cp{v} = getelementptr i8, ptr %cptr{q}{tag}, i64 {32 * step}")
                add(f"  %cb{v} = load <32 x i8>, ptr %cp{v}, align 1")
                add(f"  %lo{v} = and <32 x i8> %cb{v}, {splat(32, 15, 'i8')}")
                add(f"  %hi{v} = lshr <32 x i8> %cb{v}, {splat(32, 4, 'i8')}")
                add(f"  %idx{v} = shufflevector <32 x i8> %lo{v}, <32 x i8> %hi{v}, <64 x i32> {_sequence(64)}")
                add(f"  %w{v} = call <64 x i8> @llvm.x86.avx512.pshuf.b.512(<64 x i8> %lutv, <64 x i8> %idx{v})")
                add(f"  %bp{v} = getelementptr i8, ptr %bset{tag}, i64 {1024 * q + 64 * step}")
                add(f"  store <64 x i8> %w{v}, ptr %bp{v}, align 64")

    add(f"define void @{amx_kernel_name(tiles)}(ptr noalias %codes, ptr noalias %lut, ptr noalias %xq, i64 %ldx, "
        "i64 %steps, i64 %p0, i64 %p1, ptr noalias %sums, i64 %ldsums, i64 %rows) nounwind {")
    add("entry:")
    add("  %buffers = alloca [4096 x i8], align 64")  # B tiles: 2 chunk parities x 2 panels
    add("  %lutv = load <64 x i8>, ptr %lut, align 1")
    add("  %chunks = udiv i64 %steps, 16")
    add("  %last = sub i64 %chunks, 1")
    add("  %panelbytes = mul i64 %steps, 32")
    if tiles == 1:
        add("  %r0 = trunc i64 %rows to i16")
    else:
        add("  %r0 = add i16 16, 0")
        add("  %rest = sub i64 %rows, 16")
        add("  %r1 = trunc i64 %rest to i16")
        add("  %x1off = mul i64 %ldx, 16")
        add("  %xq1 = getelementptr i8, ptr %xq, i64 %x1off")
        add("  %s1off = mul i64 %ldsums, 16")
    add("  %xq0 = getelementptr i8, ptr %xq, i64 0")
    add("  br label %panel")
    add("panel:")
    add("  %p = phi i64 [%p0, %entry], [%pnext, %store]")
    add("  %more = icmp slt i64 %p, %p1")
    add("  br i1 %more, label %start, label %done")
    add("start:")
    for q in pair:
        add(f"  %pq{q} = add i64 %p, {q}")
        add(f"  %coff{q} = mul i64 %pq{q}, %panelbytes")
        add(f"  %cfirst{q} = getelementptr i8, ptr %codes, i64 %coff{q}")
        for t in row_tiles:
            add(f"  %z{q}{t} = call x86_amx @llvm.x86.tilezero.internal(i16 %r{t}, i16 64)")
    decode("0", "f")  # the pipeline's first chunk
    add("  br label %chunk")
    add("chunk:")
    add("  %ch = phi i64 [0, %start], [%chnext, %chunk]")
    for q in pair:
        for t in row_tiles:
            add(f"  %c{q}{t} = phi x86_amx [%z{q}{t}, %start], [%n{q}{t}, %chunk]")
    add("  %chnext = add i64 %ch, 1")
    add("  %hasnext = icmp slt i64 %chnext, %chunks")
    add("  %ahead = select i1 %hasnext, i64 %chnext, i64 %last")  # the last pass re-decodes the last chunk
    decode("%ahead", "n")  # ... into the other parity's buffers (when there is one chunk: the same, harmless)
    add("  %cpar = and i64 %ch, 1")
    add("  %coffb = mul i64 %cpar, 2048")
    add("  %cset = getelementptr i8, ptr %buffers, i64 %coffb")
    add("  %xoff = mul i64 %ch, 64")
    for t in row_tiles:
        add(f"  %xa{t} = getelementptr i8, ptr %xq{t}, i64 %xoff")
        add(f"  %ta{t} = call x86_amx @llvm.x86.tileloadd64.internal(i16 %r{t}, i16 64, ptr %xa{t}, i64 %ldx)")
    for q in pair:
        add(f"  %bq{q} = getelementptr i8, ptr %cset, i64 {1024 * q}")
        add(f"  %tb{q} = call x86_amx @llvm.x86.tileloadd64.internal(i16 16, i16 64, ptr %bq{q}, i64 64)")
        for t in row_tiles:
            add(f"  %n{q}{t} = call x86_amx @llvm.x86.tdpbusd.internal(i16 %r{t}, i16 64, i16 64, x86_amx %c{q}{t}, "
                f"x86_amx %ta{t}, x86_amx %tb{q})")
    add("  br i1 %hasnext, label %chunk, label %store")
    add("store:")  # the panels' int32 sums, rows apart by ldsums
    for q in pair:
        add(f"  %sc{q} = mul i64 %pq{q}, {4 * PANEL}")
        add(f"  %sp{q}0 = getelementptr i8, ptr %sums, i64 %sc{q}")
        if tiles == 2:
            add(f"  %sp{q}1 = getelementptr i8, ptr %sp{q}0, i64 %s1off")
        for t in row_tiles:
            add(f"  call void @llvm.x86.tilestored64.internal(i16 %r{t}, i16 64, ptr %sp{q}{t}, i64 %ldsums, "
                f"x86_amx %n{q}{t})")
    add("  %pnext = add i64 %p, 2")
    add("  br label %panel")
    add("done:")
    add("  ret void")
    add("}")
    return "\n".join(lines)
