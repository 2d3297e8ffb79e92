#ifndef RUNFLEET_METRICS_H
#define RUNFLEET_METRICS_H

#include <stddef.h>

/* Counters, gauges and histograms keyed by family name and a label string,
 * rendered in the Prometheus text exposition format 0.0.4. Not thread-safe:
 * runfleetd uses it from the loop thread only. */

enum metrics_type { METRICS_COUNTER, METRICS_GAUGE, METRICS_HISTOGRAM };

struct metrics; /* opaque */

/* Creates an empty registry, or NULL when out of memory. */
struct metrics *metrics_new(void);

/* Frees the registry and every series. NULL is fine. */
void metrics_destroy(struct metrics *m);

/* Declares a family. For histograms, buckets are the upper bounds, in
 * increasing order (+Inf is implied). Returns 0, or -1 when the name is
 * invalid, already declared with another type, or out of memory. */
int metrics_declare(struct metrics *m, const char *name, enum metrics_type type,
                    const char *help, const double *buckets, size_t nbuckets);

/* labels is the inside of the braces, e.g. "pool=\"gpu\",state=\"idle\"",
 * or "" for none; label values must already be escaped (metrics_escape).
 * The family must be declared with the matching type; otherwise -1. */
int metrics_counter_add(struct metrics *m, const char *name, const char *labels,
                        double delta);
int metrics_gauge_set(struct metrics *m, const char *name, const char *labels,
                      double value);
int metrics_histogram_observe(struct metrics *m, const char *name,
                              const char *labels, double value);

/* Drops every series of a gauge family (before re-setting it from state, so
 * vanished pools do not linger). */
void metrics_gauge_reset(struct metrics *m, const char *name);

/* Returns the current value of a counter or gauge series (for a histogram,
 * its observation count), or 0 if absent. */
double metrics_value(const struct metrics *m, const char *name,
                     const char *labels);

/* Renders the whole registry; returns a malloc'd string (caller frees) and its
 * length in *len, or NULL when out of memory. */
char *metrics_render(const struct metrics *m, size_t *len);

/* Escapes a label value (backslash, double quote, newline) into out.
 * Returns out, truncated to out_size. */
char *metrics_escape(const char *value, char *out, size_t out_size);

#ifdef RUNFLEET_UNITTEST
int metrics_valid_name(const char *name);
int metrics_canonical_labels(const char *labels, int histogram, char *out,
                             size_t out_size);
char *metrics_format_value(double v, char *out, size_t out_size);
#endif

#endif
