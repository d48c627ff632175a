/*
 * xlu-check: reads an xl domain configuration with Xen's own parser
 * (libxlutil, the library `xl create` parses with) and prints back the keys
 * asked for, so that the test can compare them with the typed configuration.
 *
 *   xlu-check CONFIG s:KEY n:KEY l:KEY ...
 *
 * The file is read whole and handed to xlu_cfg_readdata(), as xl does. Each
 * argument names a key and how xl reads it: s = string (xlu_cfg_get_string),
 * n = number (xlu_cfg_get_long), l = list of strings (xlu_cfg_get_list).
 * Output, one line per key (strings hex-encoded, so that any byte shows):
 *   KEY s HEX | KEY n DECIMAL | KEY l COUNT HEX... | KEY absent
 * Exit status: 0 read back; 1 the parser rejected the file (its messages are
 * on stderr); 2 a key has the wrong type, or another failure.
 *
 * Built by xen-config/tests/xen_config.rs: cc xlu-check.c -lxlutil
 * (Debian package libxen-dev).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libxlutil.h>

static void put_hex(const char *s) {
    putchar(' ');
    if (!*s) { putchar('-'); return; } /* the empty string */
    for (; *s; s++) printf("%02x", (unsigned char)*s);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: xlu-check CONFIG [s|n|l]:KEY...\n");
        return 2;
    }
    FILE *f = fopen(argv[1], "rb");
    if (!f) { perror(argv[1]); return 2; }
    static char data[1 << 20];
    size_t len = fread(data, 1, sizeof data, f);
    if (ferror(f) || !feof(f)) {
        fprintf(stderr, "%s: unreadable or over 1 MiB\n", argv[1]);
        return 2;
    }
    fclose(f);

    XLU_Config *cfg = xlu_cfg_init(stderr, argv[1]);
    if (!cfg) { perror("xlu_cfg_init"); return 2; }
    int rc = xlu_cfg_readdata(cfg, data, (int)len);
    if (rc) {
        fprintf(stderr, "%s: rejected by libxlutil: %s\n", argv[1], strerror(rc));
        xlu_cfg_destroy(cfg);
        return 1;
    }

    int status = 0;
    for (int i = 2; i < argc; i++) {
        const char *arg = argv[i];
        if (strlen(arg) < 3 || arg[1] != ':') {
            fprintf(stderr, "bad key argument %s\n", arg);
            status = 2;
            continue;
        }
        const char *key = arg + 2;
        if (arg[0] == 's') {
            const char *value;
            rc = xlu_cfg_get_string(cfg, key, &value, 0);
            if (rc == ESRCH) { printf("%s absent\n", key); continue; }
            if (rc) { status = 2; continue; }
            printf("%s s", key);
            put_hex(value);
            putchar('\n');
        } else if (arg[0] == 'n') {
            long value;
            rc = xlu_cfg_get_long(cfg, key, &value, 0);
            if (rc == ESRCH) { printf("%s absent\n", key); continue; }
            if (rc) { status = 2; continue; }
            printf("%s n %ld\n", key, value);
        } else if (arg[0] == 'l') {
            XLU_ConfigList *list;
            int entries;
            rc = xlu_cfg_get_list(cfg, key, &list, &entries, 0);
            if (rc == ESRCH) { printf("%s absent\n", key); continue; }
            if (rc) { status = 2; continue; }
            printf("%s l %d", key, entries);
            for (int e = 0; e < entries; e++) {
                const char *item = xlu_cfg_get_listitem(list, e);
                if (!item) { /* a nested list: xl wants strings here */
                    fprintf(stderr, "%s[%d] is not a string\n", key, e);
                    status = 2;
                    break;
                }
                put_hex(item);
            }
            putchar('\n');
        } else {
            fprintf(stderr, "bad key type in %s\n", arg);
            status = 2;
        }
    }
    xlu_cfg_destroy(cfg);
    if (fflush(stdout)) return 2;
    return status;
}
