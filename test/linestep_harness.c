/* The compiled line step without Python, for running another architecture's build (aarch64/NEON
 * under qemu-user) on the inputs the host's tests use.  test/test_linestep_neon.py writes the
 * input file, runs this program and compares its output with the host kernel and the numpy step.
 *
 *   linestep_harness IN OUT
 * IN:  int32 bands, f1, f2, k, width, lines, threads, kind ('B', 'H' or 'f'), probabilities;
 *      float32 gain[bands], offset[bands], w1, b1, w2, b2, head (as scannernet_ros/stepper.py packs
 *      them); then lines x bands x width samples of the kind.
 * OUT: float32 out[lines][width]; int32 finite[lines].
 * Every line steps the state from zeros at the first one, as the segmenter does after a reset. */
#define LINESTEP_CORE_ONLY
#include "../scannernet_ros/_linestep.c"

#include <stdio.h>
#include <stdlib.h>

static void *read_all(FILE *f, size_t bytes)
{
    void *p = calloc(bytes ? bytes : 1, 1);
    if (!p || fread(p, 1, bytes, f) != bytes) {
        fprintf(stderr, "linestep_harness: input too short\n");
        exit(2);
    }
    return p;
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: linestep_harness IN OUT\n");
        return 2;
    }
    FILE *in = fopen(argv[1], "rb");
    if (!in) {
        perror(argv[1]);
        return 2;
    }
    int *hdr = read_all(in, 9 * sizeof(int));
    const int bands = hdr[0], f1 = hdr[1], f2 = hdr[2], k = hdr[3], width = hdr[4], lines = hdr[5],
              threads = hdr[6], probabilities = hdr[8];
    const char kind = (char)hdr[7];
    const int groups = tap_groups(k), fmax = f1 > f2 ? f1 : f2, p = k / 2;
    const size_t item = kind == 'B' ? 1 : kind == 'H' ? 2 : 4;
    if (bands < 1 || f1 < 1 || f2 < 1 || k < 1 || k % 2 == 0 || width < 1 || lines < 1 || threads < 1
        || threads > MAX_THREADS || (size_t)((bands > f2 ? bands : f2) + f1) * groups > TILE_MAX) {
        fprintf(stderr, "linestep_harness: bad dimensions\n");
        return 2;
    }
    float *gain = read_all(in, bands * sizeof(float)), *offset = read_all(in, bands * sizeof(float));
    float *w1 = read_all(in, (size_t)4 * TERMS * f1 * (bands + f1) * groups * sizeof(float));
    float *b1 = read_all(in, (size_t)4 * f1 * sizeof(float));
    float *w2 = read_all(in, (size_t)4 * TERMS * f2 * (f1 + f2) * groups * sizeof(float));
    float *b2 = read_all(in, (size_t)4 * f2 * sizeof(float));
    float *head = read_all(in, (size_t)(f2 + 1) * sizeof(float));
    char *samples = read_all(in, (size_t)lines * bands * width * item);
    fclose(in);

    const ptrdiff_t wp = ((ptrdiff_t)width + BLOCK - 1) / BLOCK * BLOCK, stride = wp + pad_columns(k);
    float *rows = calloc((size_t)(bands + f1 + f2) * stride, sizeof(float));
    float *c1 = calloc((size_t)f1 * width, sizeof(float)), *c2 = calloc((size_t)f2 * width, sizeof(float));
    float *scratch = calloc((size_t)(fmax + 1) * wp, sizeof(float));
    float *out = calloc((size_t)lines * width, sizeof(float));
    int *finite = calloc((size_t)lines, sizeof(int));
    if (!rows || !c1 || !c2 || !scratch || !out || !finite) {
        fprintf(stderr, "linestep_harness: out of memory\n");
        return 2;
    }
    for (int line = 0; line < lines; line++) {
        const char *x = samples + (size_t)line * bands * width * item;
        standardise(x, kind, (ptrdiff_t)(width * item), (ptrdiff_t)item, gain, offset, rows + p, stride, bands, width);
        const Step s = {.w1 = w1, .b1 = b1, .w2 = w2, .b2 = b2, .head = head, .c1 = c1, .c2 = c2, .rows = rows,
                        .h = scratch, .logits = scratch + fmax * wp, .out = out + (size_t)line * width,
                        .bands = bands, .f1 = f1, .f2 = f2, .k = k, .width = width, .wp = wp,
                        .probabilities = probabilities};
        finite[line] = run_line(&s, threads);
    }
    FILE *o = fopen(argv[2], "wb");
    if (!o || fwrite(out, sizeof(float), (size_t)lines * width, o) != (size_t)lines * width
        || fwrite(finite, sizeof(int), (size_t)lines, o) != (size_t)lines || fclose(o) != 0) {
        perror(argv[2]);
        return 2;
    }
    return 0;
}
