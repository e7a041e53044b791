// Dynamic work distribution for the CPU kernels: every parallel loop of knn_cpu.cpp,
// kdtree_cpu.cpp and pool_cpu.cpp goes through parallel_for_dynamic().
//
// Why: at::parallel_for (OpenMP backend) hands each thread one fixed, equal share, so when another
// process holds a core, the call waits for the share of the thread that is descheduled there.
// Here the threads take small work items from a shared counter: the threads that run take over
// the work, and a descheduled thread holds up at most the one item it has started.
//
// What it cannot fix: an OpenMP region still ends at a barrier that waits for every thread of the
// team, and under libgomp's default wait policy idle threads spin (at barriers and between
// regions) instead of sleeping. On 2 cores shared with busy processes, that, not the split, made a
// 2-thread Chamfer forward+backward 7-11x slower than 1 thread, with the old static split and
// with this one alike; fewer regions per call (no separate NaN pass, no parallel fills or copies
// inside the kernels) brought it to 1.5-2.1x, and OMP_WAIT_POLICY=PASSIVE in the environment
// before torch loads to under 1.1x (docs/performance.md; benchmarks/bench_busy.py). A pool of
// our own threads that sleep between loops and are never waited for unless mid-item was tried:
// no better under the default policy (torch's OpenMP threads still spin), 30 % slower when idle.
#pragma once

#include <ATen/Parallel.h>
#include <c10/util/ParallelGuard.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <exception>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace crfold {

// Calls fn(item) exactly once for every item in [0, n_items), in any order and on any thread, so
// fn must write only what its item owns (results then do not depend on the number of threads).
//
// grain has the meaning of at::parallel_for's: the loop runs on the calling thread, without
// starting a parallel region, unless n_items > grain, and it uses at most n_items / grain threads
// (so grain is the fewest items worth a thread). Also inline inside another parallel region.
// An exception thrown by fn stops the other threads from taking new items and is rethrown here.
template <typename F>
void parallel_for_dynamic(int64_t n_items, int64_t grain, const F& fn) {
  if (n_items <= 0) return;
  at::internal::lazy_init_num_threads();
  grain = std::max<int64_t>(grain, 1);
#ifdef _OPENMP
  const int64_t threads = std::min<int64_t>(at::get_num_threads(), (n_items + grain - 1) / grain);
  if (n_items > grain && threads > 1 && !at::in_parallel_region()) {
    std::atomic<int64_t> next{0};
    std::atomic_flag failed = ATOMIC_FLAG_INIT;
    std::exception_ptr error;
    // No num_threads clause (a team smaller than the pool makes libgomp tear threads down and
    // recreate them, pytorch#32008): surplus team members take no items.
#pragma omp parallel
    {
      const int tid = omp_get_thread_num();
      if (tid < threads) {
        at::internal::ThreadIdGuard tid_guard(tid);
        c10::ParallelGuard guard(true);
        try {
          for (int64_t i = next.fetch_add(1, std::memory_order_relaxed); i < n_items;
               i = next.fetch_add(1, std::memory_order_relaxed)) {
            fn(i);
          }
        } catch (...) {
          next.store(n_items, std::memory_order_relaxed);  // nobody starts another item
          if (!failed.test_and_set()) error = std::current_exception();
        }
      }
    }  // the region's closing barrier publishes every item's writes to this thread
    if (error) std::rethrow_exception(error);
    return;
  }
#endif
  at::internal::ThreadIdGuard tid_guard(0);
  c10::ParallelGuard guard(true);
  for (int64_t i = 0; i < n_items; ++i) fn(i);
}

}  // namespace crfold
