/* Threads that exist before mmtier starts: this program (linked against
 * nothing of mmtier) starts its threads, then loads libmmtier_api.so with
 * dlopen (the runtime starts in the library's constructor, on the main
 * thread), then lets the threads allocate through the API.  Each thread
 * allocates on both tiers and by policy, checks placement and contents, and
 * frees blocks allocated by another thread.  Prints "late start ok".
 * usage: late_start_probe /path/to/libmmtier_api.so */
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

enum { kThreads = 4, kBlocks = 2000 };

static void *(*malloc_on)(int, size_t);
static void *(*api_malloc)(size_t);
static void (*api_free)(void *);
static int (*tier_of)(const void *);
static pthread_barrier_t start;
static void *shared[kThreads][kBlocks];
static int failures;

static void *worker(void *arg) {
  const int id = (int)(long)arg;
  pthread_barrier_wait(&start); /* released only after dlopen */
  for (int i = 0; i < kBlocks; ++i) {
    size_t size = 16 + (size_t)((i * 37 + id * 11) % 4000);
    unsigned char *p = i % 3 == 0 ? malloc_on(i % 2, size) : api_malloc(size);
    if (!p) {
      __atomic_add_fetch(&failures, 1, __ATOMIC_RELAXED);
      continue;
    }
    memset(p, id + 1, size);
    if (tier_of(p) < 0 || (i % 3 == 0 && tier_of(p) != i % 2)) __atomic_add_fetch(&failures, 1, __ATOMIC_RELAXED);
    shared[id][i] = p;
  }
  pthread_barrier_wait(&start);
  /* Free the blocks of the next thread: cross-thread frees. */
  const int other = (id + 1) % kThreads;
  for (int i = 0; i < kBlocks; ++i) {
    unsigned char *p = shared[other][i];
    if (p && p[0] != other + 1) __atomic_add_fetch(&failures, 1, __ATOMIC_RELAXED);
    api_free(p);
  }
  return NULL;
}

int main(int argc, char **argv) {
  if (argc < 2) return 2;
  pthread_t threads[kThreads];
  pthread_barrier_init(&start, NULL, kThreads + 1);
  for (long i = 0; i < kThreads; ++i)
    if (pthread_create(&threads[i], NULL, worker, (void *)i) != 0) return 3;
  void *lib = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
  if (!lib) {
    fprintf(stderr, "dlopen: %s\n", dlerror());
    return 4;
  }
  *(void **)&malloc_on = dlsym(lib, "mmtier_malloc_on");
  *(void **)&api_malloc = dlsym(lib, "mmtier_malloc");
  *(void **)&api_free = dlsym(lib, "mmtier_free");
  *(void **)&tier_of = dlsym(lib, "mmtier_tier_of");
  if (!malloc_on || !api_malloc || !api_free || !tier_of) return 5;
  pthread_barrier_wait(&start);
  pthread_barrier_wait(&start);
  for (int i = 0; i < kThreads; ++i) pthread_join(threads[i], NULL);
  if (failures) {
    fprintf(stderr, "%d failures\n", failures);
    return 1;
  }
  printf("late start ok\n");
  return 0;
}
