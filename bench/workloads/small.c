/* A small, short-lived C program, for the spawn_small row of
 * bench/run_bench.py (bench/workloads/spawn.cc starts it hundreds of times):
 * what a typical small command does with the allocator between start and
 * exit.  It mallocs a few dozen strings of generated words and a small
 * array of numbers, sorts both with qsort, checks the order and prints one
 * line.  Everything is generated from a fixed seed, so the line is the same
 * in every run under every allocator.  Exits 1 if a check fails.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { STRINGS = 40, NUMBERS = 200 };

static unsigned long long state = 0x2545f4914f6cdd1dULL;

static unsigned next(void) { /* xorshift64 */
  state ^= state << 13;
  state ^= state >> 7;
  state ^= state << 17;
  return (unsigned)(state >> 32);
}

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

static int cmp_int(const void *a, const void *b) {
  const int x = *(const int *)a, y = *(const int *)b;
  return (x > y) - (x < y);
}

int main(void) {
  static const char *const words[] = {"alpha", "bravo", "charlie", "delta", "echo", "foxtrot",
                                      "golf", "hotel", "india", "juliet", "kilo", "lima"};
  const size_t nwords = sizeof words / sizeof words[0];
  char **strs = malloc(STRINGS * sizeof *strs);
  int *nums = malloc(NUMBERS * sizeof *nums);
  if (strs == NULL || nums == NULL) return 1;
  size_t bytes = 0;
  for (int i = 0; i < STRINGS; ++i) {
    const char *a = words[next() % nwords], *b = words[next() % nwords];
    const size_t len = strlen(a) + strlen(b) + 12;
    strs[i] = malloc(len);
    if (strs[i] == NULL) return 1;
    snprintf(strs[i], len, "%s-%s-%u", a, b, next() % 100000);
    bytes += strlen(strs[i]);
  }
  for (int i = 0; i < NUMBERS; ++i) nums[i] = (int)(next() % 1000000);
  qsort(strs, STRINGS, sizeof *strs, cmp_str);
  qsort(nums, NUMBERS, sizeof *nums, cmp_int);
  long long sum = 0;
  for (int i = 0; i < NUMBERS; ++i) {
    if (i > 0 && nums[i - 1] > nums[i]) return 1;
    sum += nums[i];
  }
  for (int i = 1; i < STRINGS; ++i)
    if (strcmp(strs[i - 1], strs[i]) > 0) return 1;
  printf("small: %d strings (%zu bytes) from %s to %s; %d numbers, median %d, sum %lld\n", STRINGS, bytes,
         strs[0], strs[STRINGS - 1], NUMBERS, nums[NUMBERS / 2], sum);
  for (int i = 0; i < STRINGS; ++i) free(strs[i]);
  free(strs);
  free(nums);
  return 0;
}
