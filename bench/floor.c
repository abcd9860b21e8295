/*
 * The floor for the scoreboard benchmarks: the bare work that an update and
 * a read_all cannot avoid, in plain C, so that the Rust library and the Perl
 * module can be compared against what the hardware and kernel allow.
 *
 *   update:   MD5 of the status, then one pwrite() at offset 0 of
 *             md5(16) + be32 length(4) + status (the Parallel::Scoreboard
 *             record), into a file created and flock()ed once beforehand.
 *   read_all: readdir() over the directory; for each status_* entry
 *             openat() + flock(LOCK_EX|LOCK_NB) (expected to fail: the owner
 *             is alive) + one read() + close(). No checksum, no parsing.
 *
 * Usage:
 *   floor selftest            (MD5 test vectors of RFC 1321)
 *   floor md5hex STRING       (for a comparison with Digest::MD5)
 *   floor update   DIR SIZE ITERS SAMPLES
 *   floor read_all DIR EXPECTED ITERS SAMPLES
 *
 * Prints one line "floor <op> <param> <ns/op>...": the time per operation of
 * each of SAMPLES timed samples of ITERS operations (after one untimed
 * warm-up sample), sorted.
 *
 * Built by bench/scoreboard.sh with `gcc -O2`. MD5 is written here from the
 * description in RFC 1321 so that nothing needs installing.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <time.h>
#include <unistd.h>

/* ---- MD5 (RFC 1321) ---------------------------------------------------- */

struct md5 {
    uint32_t h[4];
    uint64_t len;      /* bytes hashed so far */
    uint8_t buf[64];   /* pending partial block */
    size_t used;
};

static inline uint32_t rotl(uint32_t x, unsigned n) { return (x << n) | (x >> (32 - n)); }

/* The four auxiliary functions of RFC 1321, section 3.4 (F and G in the
 * usual equivalent forms with one operation fewer). */
#define F(x, y, z) ((z) ^ ((x) & ((y) ^ (z))))
#define G(x, y, z) ((y) ^ ((z) & ((x) ^ (y))))
#define H(x, y, z) ((x) ^ (y) ^ (z))
#define I(x, y, z) ((y) ^ ((x) | ~(z)))
/* One step: a = b + ((a + fn(b,c,d) + X[k] + T[i]) <<< s). */
#define STEP(fn, a, b, c, d, k, s, t) (a) = (b) + rotl((a) + fn((b), (c), (d)) + m[k] + (t), (s))

/* Processes one 64-byte block; the constants T[i] = floor(2^32 * |sin(i)|). */
static void md5_block(uint32_t h[4], const uint8_t *p)
{
    uint32_t m[16];
    for (int i = 0; i < 16; i++)
        m[i] = (uint32_t)p[4 * i] | (uint32_t)p[4 * i + 1] << 8 |
               (uint32_t)p[4 * i + 2] << 16 | (uint32_t)p[4 * i + 3] << 24;
    uint32_t a = h[0], b = h[1], c = h[2], d = h[3];

    STEP(F, a, b, c, d, 0, 7, 0xd76aa478);
    STEP(F, d, a, b, c, 1, 12, 0xe8c7b756);
    STEP(F, c, d, a, b, 2, 17, 0x242070db);
    STEP(F, b, c, d, a, 3, 22, 0xc1bdceee);
    STEP(F, a, b, c, d, 4, 7, 0xf57c0faf);
    STEP(F, d, a, b, c, 5, 12, 0x4787c62a);
    STEP(F, c, d, a, b, 6, 17, 0xa8304613);
    STEP(F, b, c, d, a, 7, 22, 0xfd469501);
    STEP(F, a, b, c, d, 8, 7, 0x698098d8);
    STEP(F, d, a, b, c, 9, 12, 0x8b44f7af);
    STEP(F, c, d, a, b, 10, 17, 0xffff5bb1);
    STEP(F, b, c, d, a, 11, 22, 0x895cd7be);
    STEP(F, a, b, c, d, 12, 7, 0x6b901122);
    STEP(F, d, a, b, c, 13, 12, 0xfd987193);
    STEP(F, c, d, a, b, 14, 17, 0xa679438e);
    STEP(F, b, c, d, a, 15, 22, 0x49b40821);

    STEP(G, a, b, c, d, 1, 5, 0xf61e2562);
    STEP(G, d, a, b, c, 6, 9, 0xc040b340);
    STEP(G, c, d, a, b, 11, 14, 0x265e5a51);
    STEP(G, b, c, d, a, 0, 20, 0xe9b6c7aa);
    STEP(G, a, b, c, d, 5, 5, 0xd62f105d);
    STEP(G, d, a, b, c, 10, 9, 0x02441453);
    STEP(G, c, d, a, b, 15, 14, 0xd8a1e681);
    STEP(G, b, c, d, a, 4, 20, 0xe7d3fbc8);
    STEP(G, a, b, c, d, 9, 5, 0x21e1cde6);
    STEP(G, d, a, b, c, 14, 9, 0xc33707d6);
    STEP(G, c, d, a, b, 3, 14, 0xf4d50d87);
    STEP(G, b, c, d, a, 8, 20, 0x455a14ed);
    STEP(G, a, b, c, d, 13, 5, 0xa9e3e905);
    STEP(G, d, a, b, c, 2, 9, 0xfcefa3f8);
    STEP(G, c, d, a, b, 7, 14, 0x676f02d9);
    STEP(G, b, c, d, a, 12, 20, 0x8d2a4c8a);

    STEP(H, a, b, c, d, 5, 4, 0xfffa3942);
    STEP(H, d, a, b, c, 8, 11, 0x8771f681);
    STEP(H, c, d, a, b, 11, 16, 0x6d9d6122);
    STEP(H, b, c, d, a, 14, 23, 0xfde5380c);
    STEP(H, a, b, c, d, 1, 4, 0xa4beea44);
    STEP(H, d, a, b, c, 4, 11, 0x4bdecfa9);
    STEP(H, c, d, a, b, 7, 16, 0xf6bb4b60);
    STEP(H, b, c, d, a, 10, 23, 0xbebfbc70);
    STEP(H, a, b, c, d, 13, 4, 0x289b7ec6);
    STEP(H, d, a, b, c, 0, 11, 0xeaa127fa);
    STEP(H, c, d, a, b, 3, 16, 0xd4ef3085);
    STEP(H, b, c, d, a, 6, 23, 0x04881d05);
    STEP(H, a, b, c, d, 9, 4, 0xd9d4d039);
    STEP(H, d, a, b, c, 12, 11, 0xe6db99e5);
    STEP(H, c, d, a, b, 15, 16, 0x1fa27cf8);
    STEP(H, b, c, d, a, 2, 23, 0xc4ac5665);

    STEP(I, a, b, c, d, 0, 6, 0xf4292244);
    STEP(I, d, a, b, c, 7, 10, 0x432aff97);
    STEP(I, c, d, a, b, 14, 15, 0xab9423a7);
    STEP(I, b, c, d, a, 5, 21, 0xfc93a039);
    STEP(I, a, b, c, d, 12, 6, 0x655b59c3);
    STEP(I, d, a, b, c, 3, 10, 0x8f0ccc92);
    STEP(I, c, d, a, b, 10, 15, 0xffeff47d);
    STEP(I, b, c, d, a, 1, 21, 0x85845dd1);
    STEP(I, a, b, c, d, 8, 6, 0x6fa87e4f);
    STEP(I, d, a, b, c, 15, 10, 0xfe2ce6e0);
    STEP(I, c, d, a, b, 6, 15, 0xa3014314);
    STEP(I, b, c, d, a, 13, 21, 0x4e0811a1);
    STEP(I, a, b, c, d, 4, 6, 0xf7537e82);
    STEP(I, d, a, b, c, 11, 10, 0xbd3af235);
    STEP(I, c, d, a, b, 2, 15, 0x2ad7d2bb);
    STEP(I, b, c, d, a, 9, 21, 0xeb86d391);

    h[0] += a;
    h[1] += b;
    h[2] += c;
    h[3] += d;
}

static void md5_init(struct md5 *s)
{
    s->h[0] = 0x67452301;
    s->h[1] = 0xefcdab89;
    s->h[2] = 0x98badcfe;
    s->h[3] = 0x10325476;
    s->len = 0;
    s->used = 0;
}

static void md5_update(struct md5 *s, const uint8_t *p, size_t n)
{
    s->len += n;
    if (s->used) {
        size_t take = 64 - s->used < n ? 64 - s->used : n;
        memcpy(s->buf + s->used, p, take);
        s->used += take;
        p += take;
        n -= take;
        if (s->used < 64)
            return;
        md5_block(s->h, s->buf);
        s->used = 0;
    }
    for (; n >= 64; p += 64, n -= 64)
        md5_block(s->h, p);
    memcpy(s->buf, p, n);
    s->used = n;
}

static void md5_final(struct md5 *s, uint8_t out[16])
{
    uint64_t bits = s->len * 8;
    uint8_t pad[72] = {0x80};
    size_t padlen = (s->used < 56 ? 56 : 120) - s->used;
    for (int i = 0; i < 8; i++)
        pad[padlen + i] = (uint8_t)(bits >> (8 * i));
    md5_update(s, pad, padlen + 8);
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++)
            out[4 * i + j] = (uint8_t)(s->h[i] >> (8 * j));
}

static void md5(const uint8_t *p, size_t n, uint8_t out[16])
{
    struct md5 s;
    md5_init(&s);
    md5_update(&s, p, n);
    md5_final(&s, out);
}

/* ---- timing ------------------------------------------------------------ */

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void die(const char *what)
{
    perror(what);
    exit(1);
}

/* ---- update ------------------------------------------------------------ */

static uint8_t record[20 + (1 << 20)];

static void update(int fd, const uint8_t *status, size_t len)
{
    md5(status, len, record);
    record[16] = (uint8_t)(len >> 24);
    record[17] = (uint8_t)(len >> 16);
    record[18] = (uint8_t)(len >> 8);
    record[19] = (uint8_t)len;
    memcpy(record + 20, status, len);
    if (pwrite(fd, record, 20 + len, 0) != (ssize_t)(20 + len))
        die("pwrite");
}

/* ---- read_all ---------------------------------------------------------- */

static uint8_t readbuf[64 * 1024];

/* Returns how many live files holding at least a header it found. */
static int read_all(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        die("opendir");
    int dfd = dirfd(d), live = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strncmp(e->d_name, "status_", 7) != 0)
            continue;
        int fd = openat(dfd, e->d_name, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            continue;
        if (flock(fd, LOCK_EX | LOCK_NB) == 0) {
            close(fd); /* a dead worker's file: not expected here */
            continue;
        }
        if (read(fd, readbuf, sizeof readbuf) >= 20)
            live++;
        close(fd);
    }
    closedir(d);
    return live;
}

/* ---- main -------------------------------------------------------------- */

static int selftest(void)
{
    static const struct {
        const char *in, *hex;
    } v[] = {
        {"", "d41d8cd98f00b204e9800998ecf8427e"},
        {"abc", "900150983cd24fb0d6963f7d28e17f72"},
        {"message digest", "f96b697d7cb7938d525a2f31aaf161d0"},
        {"12345678901234567890123456789012345678901234567890123456789012345678901234567890",
         "57edf4a22be3c955ac49da2e2107b67a"},
    };
    int bad = 0;
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        uint8_t out[16];
        char hex[33];
        md5((const uint8_t *)v[i].in, strlen(v[i].in), out);
        for (int j = 0; j < 16; j++)
            sprintf(hex + 2 * j, "%02x", out[j]);
        if (strcmp(hex, v[i].hex) != 0) {
            fprintf(stderr, "md5(\"%s\") = %s, expected %s\n", v[i].in, hex, v[i].hex);
            bad = 1;
        }
    }
    if (!bad)
        printf("md5 selftest ok\n");
    return bad;
}

int main(int argc, char **argv)
{
    if (argc == 2 && strcmp(argv[1], "selftest") == 0)
        return selftest();
    if (argc == 3 && strcmp(argv[1], "md5hex") == 0) {
        uint8_t out[16];
        md5((const uint8_t *)argv[2], strlen(argv[2]), out);
        for (int j = 0; j < 16; j++)
            printf("%02x", out[j]);
        printf("\n");
        return 0;
    }
    if (argc != 6) {
        fprintf(stderr,
                "usage: %s update DIR SIZE ITERS SAMPLES\n"
                "       %s read_all DIR EXPECTED ITERS SAMPLES\n"
                "       %s selftest | md5hex STRING\n",
                argv[0], argv[0], argv[0]);
        return 2;
    }
    const char *op = argv[1], *dir = argv[2];
    long param = atol(argv[3]), iters = atol(argv[4]), samples = atol(argv[5]);
    if (iters < 1 || samples < 1 || param < 0)
        return 2;
    double *t = calloc((size_t)samples, sizeof *t);
    if (!t)
        die("calloc");

    if (strcmp(op, "update") == 0) {
        if ((size_t)param > sizeof record - 20)
            return 2;
        char path[4096];
        snprintf(path, sizeof path, "%s/status_%ld", dir, (long)getpid());
        int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd < 0)
            die("open");
        if (flock(fd, LOCK_EX) != 0)
            die("flock");
        uint8_t *status = malloc((size_t)param + 1);
        memset(status, 'x', (size_t)param);
        for (long s = -1; s < samples; s++) { /* sample -1: warm-up */
            double t0 = now_ns();
            for (long i = 0; i < iters; i++)
                update(fd, status, (size_t)param);
            if (s >= 0)
                t[s] = (now_ns() - t0) / (double)iters;
        }
        unlink(path);
        close(fd);
    } else if (strcmp(op, "read_all") == 0) {
        for (long s = -1; s < samples; s++) {
            double t0 = now_ns();
            for (long i = 0; i < iters; i++) {
                int live = read_all(dir);
                if (live != param) {
                    fprintf(stderr, "floor read_all: %d live files in %s, expected %ld\n", live,
                            dir, param);
                    return 1;
                }
            }
            if (s >= 0)
                t[s] = (now_ns() - t0) / (double)iters;
        }
    } else {
        fprintf(stderr, "unknown operation %s\n", op);
        return 2;
    }
    qsort(t, (size_t)samples, sizeof *t, cmp_double);
    printf("floor %s %ld", op, param);
    for (long s = 0; s < samples; s++)
        printf(" %.1f", t[s]);
    printf("\n");
    return 0;
}
