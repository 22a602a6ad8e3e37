// SPDX-License-Identifier: MIT
/*
 * Unified diffs that read the same as GNU `diff -u` prints them, down to
 * which of several equally short edit scripts is shown. Users compare our
 * history diffs with what diff(1) says about the same files, so we follow
 * its choices: the same identical ends set aside (keeping a horizon of
 * common lines), the same discarding of lines that cannot match, the same
 * bidirectional O(ND) search (Myers 1986, section 4.2), the same sliding
 * of changes to their final place, and the same grouping into hunks.
 *
 * Lines are compared with their newline, so a last line that lacks one
 * never equals a line that has it, as in diff.
 */
#include "diff.h"

#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#define CONTEXT 3
/* Common lines kept on each side of the compared region, as diff does. */
#define HORIZON CONTEXT

/*
 * Bound on the steps of the edit search for one diff. Past it, whatever
 * is still unresolved is shown as all removed, then all added: correct,
 * just not minimal, and a huge rewrite cannot stall the daemon.
 */
#define WORK_LIMIT ((size_t)1 << 26)

struct line {
	const char *p;
	size_t len; /* counting the newline when there is one */
};

struct text {
	const char *base;
	size_t size;
	struct line *line;
	ptrdiff_t n;
	ptrdiff_t lo, hi; /* the region compared line by line */
};

/* Per-side working state over the region [lo, hi). */
struct side {
	ptrdiff_t n;
	ptrdiff_t *eq; /* equivalence class of each line, from 1 */
	bool *changed; /* with a false sentinel at [-1] and [n] */
	ptrdiff_t *kept; /* classes of the lines not discarded */
	ptrdiff_t *realindex; /* region index of each kept line */
	ptrdiff_t nkept;
};

struct work {
	struct side s[2];
	ptrdiff_t nclasses;
	ptrdiff_t *fd, *bd; /* furthest x per diagonal, forward/backward */
	ptrdiff_t too_expensive;
	size_t steps;
};

struct change {
	ptrdiff_t line0, line1; /* first line of each file, from 0 */
	ptrdiff_t deleted, inserted;
};

static ptrdiff_t min_d(ptrdiff_t a, ptrdiff_t b)
{
	return a < b ? a : b;
}

static ptrdiff_t max_d(ptrdiff_t a, ptrdiff_t b)
{
	return a > b ? a : b;
}

static void split_lines(const char *s, size_t len, struct text *t)
{
	size_t count = 0, off = 0;

	memset(t, 0, sizeof(*t));
	t->base = s;
	t->size = len;
	while (off < len) {
		const char *nl = memchr(s + off, '\n', len - off);

		off = nl ? (size_t)(nl - s) + 1 : len;
		count++;
	}
	t->line = xcalloc(count, sizeof(*t->line));
	for (off = 0; off < len; t->n++) {
		const char *nl = memchr(s + off, '\n', len - off);
		size_t end = nl ? (size_t)(nl - s) + 1 : len;

		t->line[t->n].p = s + off;
		t->line[t->n].len = end - off;
		off = end;
	}
}

static bool line_eq(const struct line *x, const struct line *y)
{
	return x->len == y->len && memcmp(x->p, y->p, x->len) == 0;
}

static bool missing_newline(const struct text *t)
{
	return t->size && t->base[t->size - 1] != '\n';
}

static size_t line_offset(const struct text *t, ptrdiff_t i)
{
	return i < t->n ? (size_t)(t->line[i].p - t->base) : t->size;
}

static ptrdiff_t line_at_offset(const struct text *t, size_t off)
{
	ptrdiff_t i = t->n;

	while (i > 0 && line_offset(t, i - 1) >= off)
		i--;
	return i;
}

static ptrdiff_t skip_lines(const struct text *t, size_t *off, int count)
{
	size_t start = *off;

	while (count-- > 0 && *off < t->size) {
		const char *nl = memchr(t->base + *off, '\n', t->size - *off);

		*off = nl ? (size_t)(nl - t->base) + 1 : t->size;
	}
	return (ptrdiff_t)(*off - start);
}

/*
 * Sets the region of each text that the line comparison sees: identical
 * leading and trailing lines are left out, except for HORIZON lines next
 * to the differences (and, as in diff, one more line after when the
 * common tail starts mid-line). The tail is found byte-wise and may not
 * reach into the head, which decides the region near repeated lines.
 */
static void find_region(struct text *a, struct text *b)
{
	ptrdiff_t head = 0, nmin = min_d(a->n, b->n);
	size_t head_bytes, limit, tail = 0, ea, eb;
	bool bol;

	while (head < nmin && line_eq(&a->line[head], &b->line[head]))
		head++;
	a->lo = b->lo = max_d(head - HORIZON, 0);
	a->hi = a->n;
	b->hi = b->n;
	if (missing_newline(a) != missing_newline(b))
		return;

	head_bytes = line_offset(a, a->lo);
	limit = (a->size < b->size ? a->size : b->size) - head_bytes;
	while (tail < limit &&
	       a->base[a->size - 1 - tail] == b->base[b->size - 1 - tail])
		tail++;
	ea = a->size - tail;
	eb = b->size - tail;
	bol = (ea == 0 || a->base[ea - 1] == '\n') &&
	      (eb == 0 || b->base[eb - 1] == '\n');
	eb += (size_t)skip_lines(a, &ea, HORIZON + !bol);
	a->hi = line_at_offset(a, ea);
	b->hi = line_at_offset(b, eb);
}

static size_t hash_line(const struct line *l)
{
	uint64_t h = 1469598103934665603ULL;

	for (size_t i = 0; i < l->len; i++)
		h = (h ^ (unsigned char)l->p[i]) * 1099511628211ULL;
	return (size_t)h;
}

/* Numbers the distinct lines of both regions; equal lines, equal class. */
static void classify(const struct text *t[2], struct work *w)
{
	size_t total = (size_t)(t[0]->hi - t[0]->lo + t[1]->hi - t[1]->lo);
	size_t nbucket = 16, mask;
	ptrdiff_t *bucket, *next;
	const struct line **rep;

	while (nbucket < 2 * total)
		nbucket *= 2;
	mask = nbucket - 1;
	bucket = xcalloc(nbucket, sizeof(*bucket));
	next = xcalloc(total + 1, sizeof(*next));
	rep = xcalloc(total + 1, sizeof(*rep));
	w->nclasses = 1;
	for (int f = 0; f < 2; f++) {
		for (ptrdiff_t i = 0; i < w->s[f].n; i++) {
			const struct line *l = &t[f]->line[t[f]->lo + i];
			ptrdiff_t *slot = &bucket[hash_line(l) & mask];
			ptrdiff_t c = *slot;

			while (c && !line_eq(rep[c], l))
				c = next[c];
			if (!c) {
				c = w->nclasses++;
				rep[c] = l;
				next[c] = *slot;
				*slot = c;
			}
			w->s[f].eq[i] = c;
		}
	}
	free(rep);
	free(next);
	free(bucket);
}

/* diff's threshold: a line matching this often is provisionally dropped. */
static ptrdiff_t many_threshold(ptrdiff_t n)
{
	ptrdiff_t many = 5;

	for (ptrdiff_t t = n / 64; (t >>= 2) > 0;)
		many *= 2;
	return many;
}

/* 0: keep; 1: matches nothing in the other file; 2: matches too often. */
static void mark_discards(const struct side *s, const ptrdiff_t *other_count,
			  char *d)
{
	ptrdiff_t many = many_threshold(s->n);

	for (ptrdiff_t i = 0; i < s->n; i++) {
		ptrdiff_t nmatch = other_count[s->eq[i]];

		d[i] = nmatch == 0 ? 1 : nmatch > many ? 2 : 0;
	}
}

/*
 * Cancels the provisional discards at one end of a run of len lines,
 * walking from `from` by step (+1 from the start, -1 from the end) until
 * three definite discards in a row or a definite one eight lines in.
 */
static void trim_run_end(char *d, ptrdiff_t from, ptrdiff_t len, ptrdiff_t step)
{
	ptrdiff_t consec = 0;

	for (ptrdiff_t j = 0; j < len; j++) {
		char *c = &d[from + step * j];

		if (j >= 8 && *c == 1)
			break;
		if (*c == 2) {
			consec = 0;
			*c = 0;
		} else if (*c == 0) {
			consec = 0;
		} else {
			consec++;
		}
		if (consec == 3)
			break;
	}
}

/* Cancels every stretch of `minimum` or more provisional discards. */
static void cancel_long_subruns(char *d, ptrdiff_t len)
{
	ptrdiff_t minimum = 1, consec = 0;

	for (ptrdiff_t t = len / 4; (t >>= 2) > 0;)
		minimum *= 2;
	minimum++;
	for (ptrdiff_t j = 0; j < len; j++) {
		if (d[j] != 2)
			consec = 0;
		else if (minimum == ++consec)
			j -= consec; /* back to the subrun's start */
		else if (minimum < consec)
			d[j] = 0;
	}
}

/*
 * Handles the run of discardable lines that starts at i with a definite
 * discard; returns the index to continue from. Provisional discards stay
 * only well inside runs of definite ones, as in diff.
 */
static ptrdiff_t settle_run(char *d, ptrdiff_t n, ptrdiff_t i)
{
	ptrdiff_t j, provisional = 0, len;

	for (j = i; j < n && d[j] != 0; j++)
		provisional += d[j] == 2;
	while (j > i && d[j - 1] == 2) {
		d[--j] = 0;
		provisional--;
	}
	len = j - i;
	if (provisional * 4 > len) {
		while (j > i)
			if (d[--j] == 2)
				d[j] = 0;
		return i;
	}
	cancel_long_subruns(d + i, len);
	trim_run_end(d, i, len, 1);
	trim_run_end(d, i + len - 1, len, -1);
	return i + len - 1;
}

static void settle_discards(char *d, ptrdiff_t n)
{
	for (ptrdiff_t i = 0; i < n; i++) {
		if (d[i] == 2)
			d[i] = 0;
		else if (d[i] != 0)
			i = settle_run(d, n, i);
	}
}

/*
 * Lines that cannot match (or match so often that they only confuse the
 * search) are marked changed up front and hidden from the search.
 */
static void discard_confusing_lines(struct work *w)
{
	ptrdiff_t *count[2];
	char *d[2];

	for (int f = 0; f < 2; f++) {
		count[f] = xcalloc((size_t)w->nclasses, sizeof(*count[f]));
		for (ptrdiff_t i = 0; i < w->s[f].n; i++)
			count[f][w->s[f].eq[i]]++;
	}
	for (int f = 0; f < 2; f++) {
		d[f] = xcalloc((size_t)w->s[f].n + 1, 1);
		mark_discards(&w->s[f], count[1 - f], d[f]);
	}
	for (int f = 0; f < 2; f++) {
		struct side *s = &w->s[f];

		settle_discards(d[f], s->n);
		for (ptrdiff_t i = 0; i < s->n; i++) {
			if (d[f][i]) {
				s->changed[i] = true;
				continue;
			}
			s->kept[s->nkept] = s->eq[i];
			s->realindex[s->nkept++] = i;
		}
		free(d[f]);
		free(count[f]);
	}
}

struct box {
	ptrdiff_t xoff, xlim, yoff, ylim;
};

struct split {
	ptrdiff_t x, y;
	bool lo_minimal, hi_minimal;
};

/* The frontier of one middle-snake search within a box. */
struct search {
	struct box b;
	ptrdiff_t dmin, dmax, fmid, bmid;
	ptrdiff_t fmin, fmax, bmin, bmax;
	bool odd;
};

/*
 * Extends the search from the top left by one edit on every diagonal in
 * reach; true when it meets the backward search. Ties between diagonals
 * are broken as diff breaks them, which picks among equal scripts.
 */
static bool forward_step(struct work *w, struct search *s, struct split *sp)
{
	const ptrdiff_t *xv = w->s[0].kept, *yv = w->s[1].kept;
	ptrdiff_t *fd = w->fd;

	if (s->fmin > s->dmin)
		fd[--s->fmin - 1] = -1;
	else
		++s->fmin;
	if (s->fmax < s->dmax)
		fd[++s->fmax + 1] = -1;
	else
		--s->fmax;
	for (ptrdiff_t d = s->fmax; d >= s->fmin; d -= 2) {
		ptrdiff_t x = fd[d - 1] < fd[d + 1] ? fd[d + 1] : fd[d - 1] + 1;
		ptrdiff_t y = x - d, x0 = x;

		while (x < s->b.xlim && y < s->b.ylim && xv[x] == yv[y])
			x++, y++;
		w->steps += (size_t)(x - x0) + 1;
		fd[d] = x;
		if (s->odd && s->bmin <= d && d <= s->bmax && w->bd[d] <= x) {
			*sp = (struct split){ x, y, true, true };
			return true;
		}
	}
	return false;
}

/* The same from the bottom right. */
static bool backward_step(struct work *w, struct search *s, struct split *sp)
{
	const ptrdiff_t *xv = w->s[0].kept, *yv = w->s[1].kept;
	ptrdiff_t *bd = w->bd;

	if (s->bmin > s->dmin)
		bd[--s->bmin - 1] = PTRDIFF_MAX;
	else
		++s->bmin;
	if (s->bmax < s->dmax)
		bd[++s->bmax + 1] = PTRDIFF_MAX;
	else
		--s->bmax;
	for (ptrdiff_t d = s->bmax; d >= s->bmin; d -= 2) {
		ptrdiff_t x = bd[d - 1] < bd[d + 1] ? bd[d - 1] : bd[d + 1] - 1;
		ptrdiff_t y = x - d, x0 = x;

		while (s->b.xoff < x && s->b.yoff < y && xv[x - 1] == yv[y - 1])
			x--, y--;
		w->steps += (size_t)(x0 - x) + 1;
		bd[d] = x;
		if (!s->odd && s->fmin <= d && d <= s->fmax && x <= w->fd[d]) {
			*sp = (struct split){ x, y, true, true };
			return true;
		}
	}
	return false;
}

/*
 * The search has gone on too long (diff's TOO_EXPENSIVE): split at the
 * furthest point reached from either end, as diff does.
 */
static void give_up_split(const struct work *w, const struct search *s,
			  struct split *sp)
{
	const struct box *b = &s->b;
	ptrdiff_t fxy = -1, fx = 0, bxy = PTRDIFF_MAX, bx = 0;

	for (ptrdiff_t d = s->fmax; d >= s->fmin; d -= 2) {
		ptrdiff_t x = min_d(w->fd[d], b->xlim), y = x - d;

		if (b->ylim < y) {
			x = b->ylim + d;
			y = b->ylim;
		}
		if (fxy < x + y) {
			fxy = x + y;
			fx = x;
		}
	}
	for (ptrdiff_t d = s->bmax; d >= s->bmin; d -= 2) {
		ptrdiff_t x = max_d(b->xoff, w->bd[d]), y = x - d;

		if (y < b->yoff) {
			x = b->yoff + d;
			y = b->yoff;
		}
		if (x + y < bxy) {
			bxy = x + y;
			bx = x;
		}
	}
	if ((b->xlim + b->ylim) - bxy < fxy - (b->xoff + b->yoff))
		*sp = (struct split){ fx, fxy - fx, true, false };
	else
		*sp = (struct split){ bx, bxy - bx, false, true };
}

/*
 * Finds where a shortest edit script for the box crosses its middle.
 * The first and last lines of the box must differ. Returns false when
 * the work bound is spent.
 */
static bool find_split(struct work *w, const struct box *b, bool minimal,
		       struct split *sp)
{
	struct search s = { .b = *b };

	s.dmin = b->xoff - b->ylim;
	s.dmax = b->xlim - b->yoff;
	s.fmid = s.fmin = s.fmax = b->xoff - b->yoff;
	s.bmid = s.bmin = s.bmax = b->xlim - b->ylim;
	s.odd = (s.fmid - s.bmid) & 1;
	w->fd[s.fmid] = b->xoff;
	w->bd[s.bmid] = b->xlim;
	for (ptrdiff_t c = 1;; c++) {
		if (forward_step(w, &s, sp) || backward_step(w, &s, sp))
			return true;
		if (w->steps > WORK_LIMIT)
			return false;
		if (!minimal && c >= w->too_expensive) {
			give_up_split(w, &s, sp);
			return true;
		}
	}
}

static void note_changed(struct work *w, int f, ptrdiff_t from, ptrdiff_t to)
{
	while (from < to)
		w->s[f].changed[w->s[f].realindex[from++]] = true;
}

/* Marks the lines of a shortest (or nearly so) edit script for the box. */
static void compareseq(struct work *w, struct box b, bool minimal)
{
	const ptrdiff_t *xv = w->s[0].kept, *yv = w->s[1].kept;

	for (;;) {
		struct split sp;
		struct box lo, hi;

		while (b.xoff < b.xlim && b.yoff < b.ylim &&
		       xv[b.xoff] == yv[b.yoff])
			b.xoff++, b.yoff++;
		while (b.xoff < b.xlim && b.yoff < b.ylim &&
		       xv[b.xlim - 1] == yv[b.ylim - 1])
			b.xlim--, b.ylim--;
		if (b.xoff == b.xlim || b.yoff == b.ylim ||
		    !find_split(w, &b, minimal, &sp)) {
			note_changed(w, 0, b.xoff, b.xlim);
			note_changed(w, 1, b.yoff, b.ylim);
			return;
		}
		lo = (struct box){ b.xoff, sp.x, b.yoff, sp.y };
		hi = (struct box){ sp.x, b.xlim, sp.y, b.ylim };
		/* Recurse into the smaller half to keep the stack shallow. */
		if ((hi.xlim + hi.ylim) - (hi.xoff + hi.yoff) <
		    (lo.xlim + lo.ylim) - (lo.xoff + lo.yoff)) {
			compareseq(w, hi, sp.hi_minimal);
			b = lo;
			minimal = sp.lo_minimal;
		} else {
			compareseq(w, lo, sp.lo_minimal);
			b = hi;
			minimal = sp.hi_minimal;
		}
	}
}

static void run_search(struct work *w)
{
	ptrdiff_t n0 = w->s[0].nkept, n1 = w->s[1].nkept;
	size_t diags = (size_t)(n0 + n1 + 3);
	ptrdiff_t te = 1;

	/* diff's bound: about the square root of the input, at least 4096. */
	for (size_t t = diags; t != 0; t >>= 2)
		te <<= 1;
	w->too_expensive = max_d(te, 4096);
	w->fd = xcalloc(2 * diags, sizeof(*w->fd));
	w->bd = w->fd + diags;
	/* Diagonals run from -(n1 + 1) to n0 + 1. */
	w->fd += n1 + 1;
	w->bd += n1 + 1;
	compareseq(w, (struct box){ 0, n0, 0, n1 }, false);
	free(w->fd - (n1 + 1));
	w->fd = w->bd = NULL;
}

/*
 * Slides each run of changed lines over equal neighbours: first up to
 * merge with runs before it, then down as far as it goes, and finally
 * back up to line up with a run of changes in the other file if one was
 * passed. The same rules as diff's shift_boundaries, for the same output.
 */
static void shift_boundaries(struct work *w, int f)
{
	bool *changed = w->s[f].changed, *other = w->s[1 - f].changed;
	const ptrdiff_t *eq = w->s[f].eq;
	ptrdiff_t i = 0, j = 0, end = w->s[f].n;

	for (;;) {
		ptrdiff_t start, runlength, corresponding;

		while (i < end && !changed[i]) {
			while (other[j++])
				continue;
			i++;
		}
		if (i == end)
			return;
		start = i;
		while (changed[++i])
			continue;
		while (other[j])
			j++;
		do {
			runlength = i - start;
			while (start && eq[start - 1] == eq[i - 1]) {
				changed[--start] = true;
				changed[--i] = false;
				while (changed[start - 1])
					start--;
				while (other[--j])
					continue;
			}
			corresponding = other[j - 1] ? i : end;
			while (i != end && eq[start] == eq[i]) {
				changed[start++] = false;
				changed[i++] = true;
				while (changed[i])
					i++;
				while (other[++j])
					corresponding = i;
			}
		} while (runlength != i - start);
		while (corresponding < i) {
			changed[--start] = true;
			changed[--i] = false;
			while (other[--j])
				continue;
		}
	}
}

/*
 * Collects the runs of changed lines, in file line numbers, in order.
 * Runs are separated by unchanged lines, so there are at most one more
 * than the shorter side has lines.
 */
static struct change *build_script(const struct work *w, ptrdiff_t lo,
				   size_t *count)
{
	const bool *c0 = w->s[0].changed, *c1 = w->s[1].changed;
	ptrdiff_t i0 = 0, i1 = 0;
	struct change *script;

	script = xcalloc((size_t)min_d(w->s[0].n, w->s[1].n) + 1,
			 sizeof(*script));
	*count = 0;
	while (i0 < w->s[0].n || i1 < w->s[1].n) {
		if (c0[i0] || c1[i1]) {
			struct change *ch = &script[(*count)++];

			ch->line0 = lo + i0;
			ch->line1 = lo + i1;
			while (c0[i0])
				i0++;
			while (c1[i1])
				i1++;
			ch->deleted = lo + i0 - ch->line0;
			ch->inserted = lo + i1 - ch->line1;
		}
		i0++;
		i1++;
	}
	return script;
}

static void put_line(struct buf *out, char mark, const struct line *l)
{
	buf_addc(out, mark);
	buf_add(out, l->p, l->len);
	if (l->len == 0 || l->p[l->len - 1] != '\n')
		buf_adds(out, "\n\\ No newline at end of file\n");
}

/* diff's range: "start,count", just "start" for one line, "before,0". */
static void put_range(struct buf *out, ptrdiff_t first, ptrdiff_t last)
{
	if (last < first)
		buf_printf(out, "%td,0", last + 1);
	else if (last == first)
		buf_printf(out, "%td", first + 1);
	else
		buf_printf(out, "%td,%td", first + 1, last - first + 1);
}

static void put_hunk(struct buf *out, const struct text *a,
		     const struct text *b, const struct change *ch, size_t nch)
{
	const struct change *last = &ch[nch - 1];
	ptrdiff_t first0 = max_d(ch->line0 - CONTEXT, 0);
	ptrdiff_t first1 = max_d(ch->line1 - CONTEXT, 0);
	ptrdiff_t last0 =
		min_d(last->line0 + last->deleted - 1 + CONTEXT, a->n - 1);
	ptrdiff_t last1 =
		min_d(last->line1 + last->inserted - 1 + CONTEXT, b->n - 1);
	ptrdiff_t i = first0, j = first1;
	size_t k = 0;

	buf_adds(out, "@@ -");
	put_range(out, first0, last0);
	buf_adds(out, " +");
	put_range(out, first1, last1);
	buf_adds(out, " @@\n");
	while (i <= last0 || j <= last1) {
		if (k == nch || i < ch[k].line0) {
			put_line(out, ' ', &a->line[i++]);
			j++;
			continue;
		}
		for (ptrdiff_t n = 0; n < ch[k].deleted; n++)
			put_line(out, '-', &a->line[i++]);
		for (ptrdiff_t n = 0; n < ch[k].inserted; n++)
			put_line(out, '+', &b->line[j++]);
		k++;
	}
}

/* Changes fewer than 2 * CONTEXT + 1 lines apart share a hunk. */
static size_t hunk_length(const struct change *ch, size_t nch)
{
	size_t k = 1;

	while (k < nch && ch[k].line0 - (ch[k - 1].line0 + ch[k - 1].deleted) <
				  2 * CONTEXT + 1)
		k++;
	return k;
}

static void put_diff(struct buf *out, const struct text *a,
		     const struct text *b, const struct change *ch, size_t nch,
		     const char *a_label, const char *b_label)
{
	buf_printf(out, "--- %s\n+++ %s\n", a_label, b_label);
	while (nch) {
		size_t k = hunk_length(ch, nch);

		put_hunk(out, a, b, ch, k);
		ch += k;
		nch -= k;
	}
}

static void side_init(struct side *s, ptrdiff_t n)
{
	s->n = n;
	s->eq = xcalloc((size_t)n + 1, sizeof(*s->eq));
	s->kept = xcalloc((size_t)n + 1, sizeof(*s->kept));
	s->realindex = xcalloc((size_t)n + 1, sizeof(*s->realindex));
	s->changed = xcalloc((size_t)n + 2, sizeof(*s->changed));
	s->changed++; /* room for the sentinel at [-1] */
	s->nkept = 0;
}

static void side_free(struct side *s)
{
	free(s->eq);
	free(s->kept);
	free(s->realindex);
	free(s->changed - 1);
}

void diff_unified(const char *a, size_t alen, const char *b, size_t blen,
		  const char *a_label, const char *b_label, struct buf *out)
{
	struct text ta, tb;
	const struct text *t[2] = { &ta, &tb };
	struct work w = { 0 };
	struct change *script;
	size_t nch;

	if (alen == blen && (alen == 0 || memcmp(a, b, alen) == 0))
		return;
	split_lines(a, alen, &ta);
	split_lines(b, blen, &tb);
	find_region(&ta, &tb);
	side_init(&w.s[0], ta.hi - ta.lo);
	side_init(&w.s[1], tb.hi - tb.lo);
	classify(t, &w);
	discard_confusing_lines(&w);
	run_search(&w);
	shift_boundaries(&w, 0);
	shift_boundaries(&w, 1);
	script = build_script(&w, ta.lo, &nch);
	if (nch)
		put_diff(out, &ta, &tb, script, nch, a_label, b_label);
	free(script);
	side_free(&w.s[0]);
	side_free(&w.s[1]);
	free(ta.line);
	free(tb.line);
}
