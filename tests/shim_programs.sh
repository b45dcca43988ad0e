#!/usr/bin/env bash
# shim_programs.sh SHIM PROBE - real programs give the same results with the
# malloc shim (LD_PRELOAD=SHIM, libwinheap-malloc.so) as with glibc's malloc.
#
# First it proves that preloading takes effect: PROBE (tests/shim_probe.c, a
# program that knows nothing of winheap) must find that strdup's block is a
# block of the process heap with the shim and must not find winheap without
# it, and python3 checks the same of its own malloc through ctypes.  Then
# each case - python3 (dicts, lists, strings, json, re, threads, gc), perl
# (hashes, arrays, regexes, sprintf, sort, pack), git (init, commits, log,
# diff, blame, gc, fsck), sqlite3 (100k rows from a recursive CTE, indexes,
# aggregates, a join, VACUUM, integrity check) and gcc (compile a C file,
# show its assembly's digest, link and run it) - runs twice in the same
# directory, once plainly and once with the shim preloaded into the case's
# shell and every program it starts; stdout, stderr and the exit code must be
# identical, and the plain run must succeed with some output.  The tools
# come from scripts/deps.sh; a missing one fails the test.
set -u

if [ "${1:-}" = "--case" ]; then
  # ---- one case, in the current directory; $2 is the case, $3 the scripts dir
  set -eo pipefail
  export LC_ALL=C TZ=UTC PYTHONHASHSEED=0 PERL_HASH_SEED=0 PERL_PERTURB_KEYS=0
  case "$2" in
    python3) python3 "$3/prog.py" ;;
    perl) perl "$3/prog.pl" ;;
    git)
      export HOME=$PWD/home GIT_CONFIG_NOSYSTEM=1 GIT_PAGER=cat PAGER=cat
      export GIT_AUTHOR_NAME=Ada GIT_AUTHOR_EMAIL=ada@example.org GIT_COMMITTER_NAME=Ada
      export GIT_COMMITTER_EMAIL=ada@example.org
      mkdir -p home
      git init -q -b main repo
      cd repo
      git config pack.threads 1
      for i in 1 2 3 4 5 6; do
        export GIT_AUTHOR_DATE="2024-01-0${i}T12:00:00Z" GIT_COMMITTER_DATE="2024-01-0${i}T12:00:00Z"
        mkdir -p "dir$((i % 3))"
        seq $((i * 1000)) $((i * 1000 + 4000)) | sed "s/^/line $i: /" > "dir$((i % 3))/file$i.txt"
        seq 1 $((i * 300)) | awk -v i="$i" '{ print ($1 % i) ? $1 : "changed by " i }' > common.txt
        [ "$i" -eq 4 ] && git rm -q dir1/file1.txt
        git add -A
        git commit -q -m "commit $i: $(wc -l < common.txt) lines in common.txt"
      done
      git log --stat --format='%H %an %ad %s'
      git diff HEAD~3 HEAD --stat
      git diff HEAD~2 HEAD | md5sum
      git blame -s common.txt | tail -n 20
      git grep -c 'changed by' HEAD~1
      git gc --quiet
      git count-objects -v | grep -E '^(count|in-pack|packs):'
      git fsck --full --no-progress 2>&1
      git rev-list --all --objects | sort | md5sum
      git cat-file -p HEAD
      ;;
    sqlite3) sqlite3 db.sqlite < "$3/prog.sql" ;;
    gcc)
      cp "$3/prog.c" .
      gcc -O2 -Wall -Wextra -S prog.c -o prog.s
      md5sum prog.s
      gcc -O0 -g -c prog.c -o prog.o
      md5sum prog.o
      gcc -O2 -Wall -Wextra prog.c -o prog
      ./prog
      ;;
    *) echo "unknown case $2" >&2; exit 2 ;;
  esac
  exit 0
fi

shim=$(realpath "$1")
probe=$(realpath "$2")
self=$(realpath "$0")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
status=0
fail() { echo "FAIL: $*"; status=1; }

for tool in python3 perl git sqlite3 gcc md5sum; do
  command -v "$tool" >/dev/null || { echo "FAIL: $tool is missing (scripts/deps.sh installs it)"; exit 1; }
done

# ---- interposition really happens ----
before=$status
out=$("$probe" 2>&1) && fail "probe without the shim: $out"
[ "$out" = "not interposed: no winheap in this process" ] || fail "probe without the shim said: $out"
out=$(LD_PRELOAD=$shim "$probe" 2>&1) || fail "probe with the shim: $out"
[ "$out" = "interposed" ] || fail "probe with the shim said: $out"
out=$(LD_PRELOAD=$shim python3 -c '
import ctypes
c = ctypes.CDLL(None)
c.malloc.restype = ctypes.c_void_p
c.GetProcessHeap.restype = ctypes.c_void_p
c.HeapSize.restype = ctypes.c_size_t
c.HeapSize.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_void_p]
p = c.malloc(77)
print(c.HeapSize(c.GetProcessHeap(), 0, p))' 2>&1) || fail "python3 ctypes check: $out"
[ "$out" = "77" ] || fail "python3's malloc(77) is not a 77-byte process heap block: $out"
[ $status = "$before" ] && echo "ok: interposition (probe and python3 ctypes)"

# ---- the programs' inputs ----
scripts=$work/scripts
mkdir -p "$scripts"
cat > "$scripts/prog.py" <<'EOF'
import collections, gc, hashlib, json, random, re, threading
h = hashlib.sha256()
def out(*a):
    s = ' '.join(str(x) for x in a)
    print(s)
    h.update(s.encode())
d = {f'key{i}': i * i for i in range(200000)}
out('dict', len(d), sum(d.values()) % 1000003)
for k in list(d)[::3]:
    del d[k]
d.update({(i, str(i)): [i] * (i % 5) for i in range(50000)})
out('dict after', len(d), sorted(d.items(), key=str)[:2])
l = [(i * 7919) % 100003 for i in range(300000)]
l.sort()
out('list', l[0], l[-1], l[len(l) // 2], sum(l[::1000]), len(set(l)))
x, chars = 12345, []
for i in range(500000):
    x = (x * 1103515245 + 12345) & 0x7fffffff
    chars.append(chr(97 + (x >> 16) % 26))
s = ''.join(chars)
out('str', s.count('abc'), len(s.split('q')), s[1000:1010], hashlib.md5(s.upper().encode()).hexdigest())
out('join', len('\n'.join(s[i:i + 50] for i in range(0, len(s), 50))), s.replace('a', 'xyz')[-20:])
obj = {'items': [{'id': i, 'name': f'item{i}', 'tags': ['a', 'b', str(i % 7)], 'v': i / 3} for i in range(20000)]}
txt = json.dumps(obj, sort_keys=True)
out('json', len(txt), json.loads(txt) == obj, hashlib.sha1(txt.encode()).hexdigest())
words = re.findall(r'[a-e]{3,}', s)
out('re', len(words), collections.Counter(words).most_common(3), len(re.sub(r'(a)(b)', r'\2\1', s)))
results = [None] * 8
def work(n):
    r = random.Random(n)
    acc = {}
    for i in range(20000):
        k = r.randrange(1000)
        acc[k] = acc.get(k, '')[-12:] + str(i) * (i % 4)
    results[n] = hashlib.md5(json.dumps(acc, sort_keys=True).encode()).hexdigest()
threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
for t in threads:
    t.start()
for t in threads:
    t.join()
out('threads', results)
class Node:
    def __init__(self, v):
        self.v, self.peer = v, None
nodes = [Node(i) for i in range(100000)]
for i, n in enumerate(nodes):
    n.peer = nodes[(i * 17) % len(nodes)]
del nodes
out('gc', gc.collect() >= 0)
print('digest', h.hexdigest())
EOF
cat > "$scripts/prog.pl" <<'EOF'
use strict; use warnings; use Digest::MD5 qw(md5_hex);
my $all = '';
sub out { my $s = join(' ', @_); print "$s\n"; $all .= "$s\n"; }
my %h; $h{"key$_"} = $_ * $_ for 1 .. 200000;
delete $h{"key$_"} for grep { $_ % 3 == 0 } 1 .. 200000;
my $sum = 0; $sum = ($sum + $h{$_}) % 1000003 for sort keys %h;
out('hash', scalar(keys %h), $sum);
my @a = map { ($_ * 7919) % 100003 } 1 .. 300000;
my @s = sort { $a <=> $b } @a;
out('array', $s[0], $s[-1], $s[@s / 2], scalar(grep { $_ % 2 } @a));
my $x = 12345;
my $str = join '', map { $x = ($x * 1103515245 + 12345) & 0x7fffffff; chr(97 + ($x >> 16) % 26) } 1 .. 500000;
my $n = () = $str =~ /abc/g;
my @w = $str =~ /([a-e]{3,})/g;
(my $t = $str) =~ s/(a)(b)/$2$1/g;
out('string', $n, scalar(@w), length($t), md5_hex(uc $str), substr($str, 1000, 10));
my @recs = map { sprintf('%05d|%s|%.3f', $_, 'x' x ($_ % 13), $_ / 7) } 1 .. 50000;
my %by; push @{ $by{ length((split /\|/)[1]) } }, $_ for @recs;
out('records', join(',', map { "$_:" . scalar(@{ $by{$_} }) } sort { $a <=> $b } keys %by));
my $packed = pack('N*', 1 .. 100000);
out('pack', length($packed), md5_hex($packed), (unpack('N*', $packed))[-1]);
my @subs = map { my $k = $_; sub { $k * $_[0] } } 1 .. 1000;
my $acc = 0; $acc += $_->(3) for @subs;
out('closures', $acc);
print 'digest ', md5_hex($all), "\n";
EOF
cat > "$scripts/prog.sql" <<'EOF'
CREATE TABLE t(id INTEGER PRIMARY KEY, grp INTEGER, val REAL, txt TEXT);
CREATE TABLE g(grp INTEGER PRIMARY KEY, name TEXT);
WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 100000)
INSERT INTO t SELECT x, x % 97, (x * 7919) % 100003 / 3.0, printf('row %d %s', x, hex(x * x)) FROM c;
WITH RECURSIVE c(x) AS (SELECT 0 UNION ALL SELECT x + 1 FROM c WHERE x < 96)
INSERT INTO g SELECT x, 'group ' || x FROM c;
CREATE INDEX t_grp ON t(grp, val);
SELECT count(*), sum(id), round(avg(val), 4), min(txt), max(length(txt)) FROM t;
SELECT g.name, count(*), round(sum(t.val), 2), max(t.txt) FROM t JOIN g USING (grp)
  GROUP BY grp ORDER BY sum(t.val) DESC LIMIT 5;
SELECT grp, group_concat(id, ',') FROM (SELECT grp, id FROM t WHERE id % 1000 = 0 ORDER BY id) GROUP BY grp LIMIT 5;
UPDATE t SET txt = upper(txt) WHERE grp < 10;
DELETE FROM t WHERE id % 3 = 0;
VACUUM;
PRAGMA integrity_check;
SELECT count(*), sum(length(txt)), count(DISTINCT grp) FROM t;
EOF
cat > "$scripts/prog.c" <<'EOF'
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct entry { char *key; unsigned value; struct entry *next; };

static unsigned hash(const char *s) {
    unsigned h = 2166136261u;
    while (*s) h = (h ^ (unsigned char)*s++) * 16777619u;
    return h;
}

static int cmp(const void *a, const void *b) {
    unsigned x = *(const unsigned *)a, y = *(const unsigned *)b;
    return (x > y) - (x < y);
}

int main(void) {
    enum { N = 100000, B = 4096 };
    struct entry **table = calloc(B, sizeof *table);
    unsigned *values = malloc(N * sizeof *values);
    char buf[64];
    for (unsigned i = 0; i < N; i++) {
        snprintf(buf, sizeof buf, "key-%u-%u", i, i * 2654435761u);
        struct entry *e = malloc(sizeof *e);
        e->key = strdup(buf);
        e->value = values[i] = hash(buf);
        e->next = table[e->value % B];
        table[e->value % B] = e;
    }
    qsort(values, N, sizeof *values, cmp);
    unsigned longest = 0, total = 0;
    for (unsigned b = 0; b < B; b++) {
        unsigned len = 0;
        for (struct entry *e = table[b], *next; e; e = next, len++) {
            next = e->next;
            total += (unsigned)strlen(e->key);
            free(e->key);
            free(e);
        }
        if (len > longest) longest = len;
    }
    printf("min %u median %u max %u longest chain %u key bytes %u\n", values[0], values[N / 2], values[N - 1],
           longest, total);
    free(values);
    free(table);
    return 0;
}
EOF

# ---- each case plainly, then with the shim, in the same directory ----
run() {  # run CASE MODE: output in $work/CASE.MODE.{out,err,rc}
  local c=$1 mode=$2 dir=$work/run
  rm -rf "$dir" && mkdir -p "$dir"
  if [ "$mode" = shim ]; then
    (cd "$dir" && LD_PRELOAD=$shim bash "$self" --case "$c" "$scripts") > "$work/$c.$mode.out" 2> "$work/$c.$mode.err"
  else
    (cd "$dir" && bash "$self" --case "$c" "$scripts") > "$work/$c.$mode.out" 2> "$work/$c.$mode.err"
  fi
  echo $? > "$work/$c.$mode.rc"
}

for c in python3 perl git sqlite3 gcc; do
  start=$SECONDS
  run "$c" plain
  run "$c" shim
  p=$work/$c.plain s=$work/$c.shim
  if [ "$(cat "$p.rc")" != 0 ] || [ ! -s "$p.out" ]; then
    fail "$c: the plain run failed (exit $(cat "$p.rc")); stderr:"; head -n 20 "$p.err"; continue
  fi
  ok=1
  [ "$(cat "$p.rc")" = "$(cat "$s.rc")" ] || { fail "$c: exit code $(cat "$s.rc") with the shim, $(cat "$p.rc") without"; ok=0; }
  cmp -s "$p.out" "$s.out" || { fail "$c: stdout differs with the shim:"; diff "$p.out" "$s.out" | head -n 20; ok=0; }
  cmp -s "$p.err" "$s.err" || { fail "$c: stderr differs with the shim:"; diff "$p.err" "$s.err" | head -n 20; ok=0; }
  [ $ok = 1 ] && echo "ok: $c ($(wc -l < "$p.out") identical lines of output, $((SECONDS - start)) s)"
done
exit $status
