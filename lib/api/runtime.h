// Runtime: start-up of the whole stack (configuration, heap, engine, fork
// handlers) exactly once, whichever comes first: the library constructor or
// the first allocation, on any thread.  Allocations made while start-up is
// under way on the same thread (the engine and libc call malloc themselves)
// are served from a small static bootstrap area and are never returned to
// the engine.
#pragma once

#include "heap/heap.h"

#include <atomic>
#include <cstddef>

namespace mmtier::detail {

enum runtime_state : int { kUninit = 0, kStarting = 1, kReady = 2, kUnmanaged = 3 };
extern std::atomic<int> g_runtime_state;

inline bool runtime_ready() { return g_runtime_state.load(std::memory_order_acquire) == kReady; }

// Starts the runtime if needed.  Returns the state afterwards: kReady, or
// kStarting when called re-entrantly from the starting thread, or kUnmanaged
// when no heap could be set up (the engine then runs on plain memory).
int runtime_start();

// Bootstrap area.
void *boot_alloc(size_t size, size_t align);
bool boot_owns(const void *p);
size_t boot_usable_size(const void *p);

// The preload and linked libraries want the background mover (unit tests,
// which link the same core, do not): called from their constructors.
void runtime_want_background();

// Writes the exit report if MMTIER_REPORT asks for one.
void runtime_exit_report();

}  // namespace mmtier::detail
