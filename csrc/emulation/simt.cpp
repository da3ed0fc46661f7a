// The SIMT scheduler of the emulated-CUDA test build (see simt.h). Fibers run on mmap'd stacks with
// a guard page and switch with a few instructions (x86-64; ucontext elsewhere, which costs a system
// call per switch); under AddressSanitizer and ThreadSanitizer every switch is
// announced to the sanitizer, and ThreadSanitizer gets exactly the ordering CUDA guarantees inside
// a block (barriers and warp intrinsics), so a missing barrier shows up as a data race. Blocks are
// ordered one after another for ThreadSanitizer too: they share one copy of the __shared__ arrays.
#include "simt.h"

#include <cxxabi.h>
#include <dlfcn.h>
#include <sys/mman.h>
#if !defined(__x86_64__)
#include <ucontext.h>
#endif
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#define UVIREID_EMU_ASAN 1
#endif
// This file itself is built without ThreadSanitizer instrumentation (tools/build_emulated.py), which
// then defines UVIREID_EMU_TSAN for it.
#if defined(__SANITIZE_THREAD__) && !defined(UVIREID_EMU_TSAN)
#define UVIREID_EMU_TSAN 1
#endif
#ifdef UVIREID_EMU_TSAN
#include <sanitizer/tsan_interface.h>
#endif

namespace uvireid {
namespace emu {
namespace {

#if defined(UVIREID_EMU_ASAN) || defined(UVIREID_EMU_TSAN)
constexpr size_t kStackBytes = size_t{512} << 10;  // sanitizer frames are several times larger
#else
constexpr size_t kStackBytes = size_t{128} << 10;
#endif

enum class State : uint8_t { Ready, AtBlock, AtWarp, Done };

[[noreturn]] void fiber_main();

#if defined(__x86_64__)
// A suspended context is its stack pointer; the callee-saved registers and the SSE/x87 control
// words are on its stack. switch_context saves the running one into *from and resumes `to`.
extern "C" void uvireid_emu_switch_context(void** from, void* to);
asm(R"(
  .text
  .globl uvireid_emu_switch_context
  .hidden uvireid_emu_switch_context
  .type uvireid_emu_switch_context, @function
uvireid_emu_switch_context:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  subq $8, %rsp
  stmxcsr (%rsp)
  fnstcw 4(%rsp)
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  ldmxcsr (%rsp)
  fldcw 4(%rsp)
  addq $8, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size uvireid_emu_switch_context, .-uvireid_emu_switch_context
)");

struct Context {
  void* sp = nullptr;
};
inline void switch_context(Context& from, Context& to) { uvireid_emu_switch_context(&from.sp, to.sp); }
// A fresh context that starts fiber_main on the stack [base, base + bytes).
inline void make_context(Context& c, char* base, size_t bytes) {
  auto* top = reinterpret_cast<uint64_t*>(reinterpret_cast<uintptr_t>(base + bytes) & ~uintptr_t{15});
  uint64_t* sp = top - 9;  // control words, six registers, the entry, a null return address
  uint32_t csr[2] = {0x1F80u, 0x037Fu};  // default MXCSR and x87 control word
  std::memcpy(sp, csr, sizeof csr);
  for (int r = 1; r <= 6; ++r) sp[r] = 0;
  sp[7] = reinterpret_cast<uint64_t>(&fiber_main);
  sp[8] = 0;  // fiber_main never returns; it starts with rsp = top - 8, as after a call
  c.sp = sp;
}
#else
struct Context {
  ucontext_t uc{};
};
inline void switch_context(Context& from, Context& to) { swapcontext(&from.uc, &to.uc); }
inline void make_context(Context& c, char* base, size_t bytes) {
  getcontext(&c.uc);
  c.uc.uc_stack.ss_sp = base;
  c.uc.uc_stack.ss_size = bytes;
  c.uc.uc_link = nullptr;
  makecontext(&c.uc, fiber_main, 0);
}
#endif

struct Wait {
  const char* file = nullptr;
  int line = 0;
  BlockOp block_op = BlockOp::Sync;
  WarpOp warp_op = WarpOp::Sync;
  unsigned mask = 0;
  int width = kWarpSize;
  int arg = 0;
  int pred = 0;
  uint64_t value = 0;
  uint64_t result = 0;
  int generation = 0;  // which of two alternating sanitizer tokens this wait releases into
};

struct Thread {
  uint3 idx{};
  State state = State::Ready;
  bool started = false;
  Wait wait;
};

// One fiber per thread slot of a block, reused by every block and launch of this OS thread.
struct Fiber {
  Context ctx;
  char* stack = nullptr;  // usable part, above the guard page
  void* tsan = nullptr;
  void* asan_fake = nullptr;
  Fiber() {
    const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
    void* base = mmap(nullptr, kStackBytes + page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                      -1, 0);
    if (base == MAP_FAILED) throw std::runtime_error("emulated CUDA: cannot map a fiber stack");
    mprotect(base, page, PROT_NONE);  // overflowing the stack faults instead of corrupting a neighbour
    stack = static_cast<char*>(base) + page;
#ifdef UVIREID_EMU_TSAN
    tsan = __tsan_create_fiber(0);
#endif
  }
  Fiber(const Fiber&) = delete;
  Fiber& operator=(const Fiber&) = delete;
};

enum class Schedule { Forward, Reverse, Random };

struct Block {
  void (*body)(void*) = nullptr;
  void* ctx = nullptr;
  dim3 grid, block;
  uint3 block_idx{};
  int nthreads = 0;
  std::vector<Thread> threads;
  std::vector<int> at_warp;  // lanes of each warp waiting at a warp intrinsic
  std::vector<int> warp_generation;
  int at_block = 0;
  int done = 0;
  int block_generation = 0;
  Thread* current = nullptr;
  Context host;
  void* host_tsan = nullptr;
  void* host_asan_fake = nullptr;
  const void* host_stack_bottom = nullptr;
  size_t host_stack_size = 0;
  std::string error;
  // Addresses ThreadSanitizer synchronises on (contents unused).
  // end_tokens[k & 1]: what the fibers of the k-th block run did, for the next block (never for
  // their own block: its fibers stay unordered but for the barriers and intrinsics).
  char start_token = 0, end_tokens[2] = {}, block_tokens[2] = {};
  uint64_t blocks_run = 0;
  std::vector<char> warp_tokens;  // 2 per warp
};

thread_local Block* g_block = nullptr;
thread_local std::vector<std::unique_ptr<Fiber>> g_fibers;
thread_local int g_last_error = 0;
thread_local uint64_t g_launches = 0;

inline void sync_release([[maybe_unused]] void* token) {
#ifdef UVIREID_EMU_TSAN
  __tsan_release(token);
#endif
}
inline void sync_acquire([[maybe_unused]] void* token) {
#ifdef UVIREID_EMU_TSAN
  __tsan_acquire(token);
#endif
}

Block& active_block() {
  if (g_block == nullptr || g_block->current == nullptr) {
    std::fputs("emulated CUDA: a device intrinsic was called outside a kernel\n", stderr);
    std::abort();
  }
  return *g_block;
}

int linear_index(const Block& b, const Thread& t) { return static_cast<int>(&t - b.threads.data()); }

// ---------------------------------------------------------------- switching

// From a fiber back to the scheduler; returns when the scheduler resumes this fiber (never when exiting).
void switch_to_host(Block& b, Thread& t, bool exiting) {
  Fiber& f = *g_fibers[static_cast<size_t>(linear_index(b, t))];
#ifdef UVIREID_EMU_ASAN
  __sanitizer_start_switch_fiber(exiting ? nullptr : &f.asan_fake, b.host_stack_bottom, b.host_stack_size);
#else
  (void)exiting;
#endif
#ifdef UVIREID_EMU_TSAN
  __tsan_switch_to_fiber(b.host_tsan, __tsan_switch_to_fiber_no_sync);
#endif
  switch_context(f.ctx, b.host);
#ifdef UVIREID_EMU_ASAN
  __sanitizer_finish_switch_fiber(f.asan_fake, &b.host_stack_bottom, &b.host_stack_size);
#endif
}

[[noreturn]] void fiber_main() {
  Block& b = *g_block;
  Thread& t = *b.current;
#ifdef UVIREID_EMU_ASAN
  __sanitizer_finish_switch_fiber(nullptr, &b.host_stack_bottom, &b.host_stack_size);
#endif
  sync_acquire(&b.start_token);  // the launcher's writes, and the blocks before this one
  sync_acquire(&b.end_tokens[(b.blocks_run + 1) & 1]);
  b.body(b.ctx);
  t.state = State::Done;
  ++b.done;
  sync_release(&b.end_tokens[b.blocks_run & 1]);
  switch_to_host(b, t, true);
  std::abort();  // a finished fiber is never resumed
}

void resume(Block& b, Thread& t) {
  const size_t slot = static_cast<size_t>(linear_index(b, t));
  Fiber& f = *g_fibers[slot];
  b.current = &t;
  if (!t.started) {
    t.started = true;
#ifdef UVIREID_EMU_ASAN
    __asan_unpoison_memory_region(f.stack, kStackBytes);  // a fiber abandoned by a failed launch may have left poison
#endif
    make_context(f.ctx, f.stack, kStackBytes);
  }
#ifdef UVIREID_EMU_ASAN
  __sanitizer_start_switch_fiber(&b.host_asan_fake, f.stack, kStackBytes);
#endif
#ifdef UVIREID_EMU_TSAN
  __tsan_switch_to_fiber(f.tsan, __tsan_switch_to_fiber_no_sync);
#endif
  switch_context(b.host, f.ctx);
#ifdef UVIREID_EMU_ASAN
  __sanitizer_finish_switch_fiber(b.host_asan_fake, nullptr, nullptr);
#endif
  b.current = nullptr;
}

// ---------------------------------------------------------------- descriptions for errors

const char* block_op_name(BlockOp op) {
  switch (op) {
    case BlockOp::Sync: return "__syncthreads";
    case BlockOp::Or: return "__syncthreads_or";
    case BlockOp::And: return "__syncthreads_and";
    case BlockOp::Count: return "__syncthreads_count";
  }
  return "?";
}

const char* warp_op_name(WarpOp op) {
  switch (op) {
    case WarpOp::Sync: return "__syncwarp";
    case WarpOp::Idx: return "__shfl_sync";
    case WarpOp::Up: return "__shfl_up_sync";
    case WarpOp::Down: return "__shfl_down_sync";
    case WarpOp::Xor: return "__shfl_xor_sync";
  }
  return "?";
}

std::string describe(const Thread& t) {
  char buf[512];
  switch (t.state) {
    case State::Ready: return "can run";
    case State::Done: return "have exited";
    case State::AtBlock:
      std::snprintf(buf, sizeof buf, "wait at %s at %s:%d", block_op_name(t.wait.block_op), t.wait.file, t.wait.line);
      return buf;
    case State::AtWarp:
      std::snprintf(buf, sizeof buf, "wait at %s(mask 0x%08x) at %s:%d", warp_op_name(t.wait.warp_op), t.wait.mask,
                    t.wait.file, t.wait.line);
      return buf;
  }
  return "?";
}

std::string kernel_name(const void* kernel) {
  Dl_info info{};
  if (dladdr(kernel, &info) != 0 && info.dli_sname != nullptr && info.dli_saddr == kernel) {
    int status = 0;
    char* demangled = abi::__cxa_demangle(info.dli_sname, nullptr, nullptr, &status);
    std::string name = status == 0 && demangled != nullptr ? demangled : info.dli_sname;
    std::free(demangled);
    return name;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, "%p", kernel);
  return buf;
}

// "threads 0-15 wait at ...; threads 16-255 have exited", runs of equal descriptions merged.
std::string where_threads_are(const Block& b) {
  std::ostringstream out;
  int start = 0;
  std::string run = describe(b.threads[0]);
  auto flush = [&](int end) {
    if (start > 0) out << "; ";
    out << (end - start == 1 ? "thread " : "threads ") << start;
    if (end - start > 1) out << "-" << end - 1;
    out << " " << run;
  };
  for (int i = 1; i < b.nthreads; ++i) {
    std::string d = describe(b.threads[static_cast<size_t>(i)]);
    if (d == run) continue;
    flush(i);
    start = i;
    run = std::move(d);
  }
  flush(b.nthreads);
  return out.str();
}

std::string block_header(const Block& b, const std::string& kernel) {
  std::ostringstream out;
  out << "emulated CUDA: kernel " << kernel << " in block (" << b.block_idx.x << "," << b.block_idx.y << ","
      << b.block_idx.z << ") of grid (" << b.grid.x << "," << b.grid.y << "," << b.grid.z << ") x block ("
      << b.block.x << "," << b.block.y << "," << b.block.z << ")";
  return out.str();
}

void fail(Block& b, const std::string& what) {
  if (b.error.empty()) b.error = what;
}

// ---------------------------------------------------------------- resolving barriers and warp intrinsics

void resolve_block(Block& b) {
  const Wait& w0 = b.threads[0].wait;
  int count = 0;
  for (const Thread& t : b.threads) {
    if (t.wait.block_op != w0.block_op || t.wait.line != w0.line || std::strcmp(t.wait.file, w0.file) != 0) {
      fail(b, "threads of the block wait at different barriers: " + where_threads_are(b));
      return;
    }
    count += t.wait.pred != 0;
  }
  int result = 0;
  switch (w0.block_op) {
    case BlockOp::Sync: break;
    case BlockOp::Or: result = count > 0; break;
    case BlockOp::And: result = count == b.nthreads; break;
    case BlockOp::Count: result = count; break;
  }
  for (Thread& t : b.threads) {
    t.wait.result = static_cast<uint64_t>(result);
    t.state = State::Ready;
  }
  b.at_block = 0;
  ++b.block_generation;
}

// Lane `lane` of warp `warp` has just arrived; completes the intrinsic when all lanes of its mask wait.
void try_resolve_warp(Block& b, int warp, int lane) {
  const int first = warp * kWarpSize;
  const int lanes = std::min(kWarpSize, b.nthreads - first);
  const Wait& me = b.threads[static_cast<size_t>(first + lane)].wait;
  const unsigned mask = me.mask;
  const unsigned existing = lanes == kWarpSize ? 0xffffffffu : ((1u << lanes) - 1u);
  char buf[256];
  if (!((mask >> lane) & 1u) || (mask & ~existing) != 0) {
    std::snprintf(buf, sizeof buf, "%s at %s:%d in warp %d, lane %d: mask 0x%08x %s", warp_op_name(me.warp_op),
                  me.file, me.line, warp, lane, mask,
                  ((mask >> lane) & 1u) ? "names lanes the block does not have" : "does not include the calling lane");
    fail(b, buf);
    return;
  }
  if (me.width < 1 || me.width > kWarpSize || (me.width & (me.width - 1)) != 0) {
    std::snprintf(buf, sizeof buf, "%s at %s:%d: width %d is not a power of 2 in [1, 32]", warp_op_name(me.warp_op),
                  me.file, me.line, me.width);
    fail(b, buf);
    return;
  }
  if (b.at_warp[static_cast<size_t>(warp)] < std::popcount(mask)) return;
  for (int l = 0; l < lanes; ++l) {
    if (!((mask >> l) & 1u)) continue;
    const Thread& t = b.threads[static_cast<size_t>(first + l)];
    if (t.state != State::AtWarp || t.wait.mask != mask) return;  // not all there yet (a deadlock shows later)
  }
  for (int l = 0; l < lanes; ++l) {
    if (!((mask >> l) & 1u)) continue;
    const Wait& w = b.threads[static_cast<size_t>(first + l)].wait;
    if (w.warp_op != me.warp_op || w.width != me.width || w.line != me.line || std::strcmp(w.file, me.file) != 0) {
      std::ostringstream out;
      out << "lanes of warp " << warp << " wait at different warp intrinsics with mask 0x" << std::hex << mask
          << std::dec << ": lane " << lane << " at " << warp_op_name(me.warp_op) << " " << me.file << ":" << me.line
          << ", lane " << l << " at " << warp_op_name(w.warp_op) << " " << w.file << ":" << w.line;
      fail(b, out.str());
      return;
    }
  }
  for (int l = 0; l < lanes; ++l) {
    if (!((mask >> l) & 1u)) continue;
    Wait& w = b.threads[static_cast<size_t>(first + l)].wait;
    const int seg = l & ~(w.width - 1);
    int src = l;
    switch (w.warp_op) {
      case WarpOp::Sync: break;
      case WarpOp::Idx: src = seg + (w.arg & (w.width - 1)); break;
      case WarpOp::Up: src = l - w.arg >= seg ? l - w.arg : l; break;
      case WarpOp::Down: src = l + w.arg < seg + w.width ? l + w.arg : l; break;
      case WarpOp::Xor: src = (l ^ w.arg) < seg + w.width ? (l ^ w.arg) : l; break;
    }
    if (src < 0 || src >= kWarpSize || !((mask >> src) & 1u)) {  // CUDA leaves this undefined
      std::snprintf(buf, sizeof buf, "%s(mask 0x%08x) at %s:%d in warp %d: lane %d reads lane %d, which is not in the mask",
                    warp_op_name(w.warp_op), mask, w.file, w.line, warp, l, src);
      fail(b, buf);
      return;
    }
    w.result = b.threads[static_cast<size_t>(first + src)].wait.value;
  }
  for (int l = 0; l < lanes; ++l)
    if ((mask >> l) & 1u) b.threads[static_cast<size_t>(first + l)].state = State::Ready;
  b.at_warp[static_cast<size_t>(warp)] -= std::popcount(mask);
  ++b.warp_generation[static_cast<size_t>(warp)];
}

// ---------------------------------------------------------------- the scheduler

Schedule schedule_from_env() {
  const char* s = std::getenv("UVIREID_EMU_SCHEDULE");
  if (s == nullptr || *s == '\0' || std::strcmp(s, "forward") == 0) return Schedule::Forward;
  if (std::strcmp(s, "reverse") == 0) return Schedule::Reverse;
  if (std::strcmp(s, "random") == 0) return Schedule::Random;
  throw std::runtime_error(std::string("emulated CUDA: UVIREID_EMU_SCHEDULE must be forward, reverse or random, got '") +
                           s + "'");
}

uint64_t seed_from_env() {
  const char* s = std::getenv("UVIREID_EMU_SEED");
  return s != nullptr && *s != '\0' ? std::strtoull(s, nullptr, 10) : 0;
}

void run_block(Block& b, Schedule schedule, std::mt19937_64& rng) {
  const dim3& bd = b.block;
  b.threads.assign(static_cast<size_t>(b.nthreads), Thread{});
  for (int i = 0; i < b.nthreads; ++i) {
    const unsigned u = static_cast<unsigned>(i);
    b.threads[static_cast<size_t>(i)].idx = {u % bd.x, (u / bd.x) % bd.y, u / (bd.x * bd.y)};
  }
  const int warps = (b.nthreads + kWarpSize - 1) / kWarpSize;
  b.at_warp.assign(static_cast<size_t>(warps), 0);
  b.warp_generation.assign(static_cast<size_t>(warps), 0);
  b.warp_tokens.assign(static_cast<size_t>(2 * warps), 0);
  b.at_block = b.done = b.block_generation = 0;
  sync_release(&b.start_token);  // the set-up above and the launcher's writes, to every fiber of the block
  std::vector<int> order(static_cast<size_t>(b.nthreads));
  for (int i = 0; i < b.nthreads; ++i) order[static_cast<size_t>(i)] = schedule == Schedule::Reverse ? b.nthreads - 1 - i : i;
  while (b.done < b.nthreads) {
    if (schedule == Schedule::Random) std::shuffle(order.begin(), order.end(), rng);
    bool ran = false;
    for (int i : order) {
      Thread& t = b.threads[static_cast<size_t>(i)];
      if (t.state != State::Ready) continue;
      ran = true;
      resume(b, t);
      if (t.state == State::AtBlock && b.at_block == b.nthreads) resolve_block(b);
      if (t.state == State::AtWarp) try_resolve_warp(b, i / kWarpSize, i % kWarpSize);
      if (!b.error.empty()) return;
    }
    if (!ran && b.done < b.nthreads) {
      fail(b, "no thread can continue: " + where_threads_are(b));
      return;
    }
  }
}

}  // namespace

// ---------------------------------------------------------------- called from kernels

const uint3& thread_index() { return active_block().current->idx; }
const uint3& block_index() { return active_block().block_idx; }
const dim3& block_dim() { return active_block().block; }
const dim3& grid_dim() { return active_block().grid; }

int block_barrier(BlockOp op, int pred, const char* file, int line) {
  Block& b = active_block();
  Thread& t = *b.current;
  t.wait.file = file;
  t.wait.line = line;
  t.wait.block_op = op;
  t.wait.pred = pred;
  t.wait.generation = b.block_generation & 1;
  sync_release(&b.block_tokens[t.wait.generation]);
  t.state = State::AtBlock;
  ++b.at_block;
  switch_to_host(b, t, false);
  sync_acquire(&b.block_tokens[t.wait.generation]);
  return static_cast<int>(t.wait.result);
}

uint64_t warp_exchange(WarpOp op, unsigned mask, uint64_t value, int arg, int width, const char* file, int line) {
  Block& b = active_block();
  Thread& t = *b.current;
  const size_t warp = static_cast<size_t>(linear_index(b, t) / kWarpSize);
  t.wait.file = file;
  t.wait.line = line;
  t.wait.warp_op = op;
  t.wait.mask = mask;
  t.wait.value = value;
  t.wait.arg = arg;
  t.wait.width = width;
  t.wait.generation = b.warp_generation[warp] & 1;
  char* token = &b.warp_tokens[2 * warp + static_cast<size_t>(t.wait.generation)];
  sync_release(token);
  t.state = State::AtWarp;
  ++b.at_warp[warp];
  switch_to_host(b, t, false);
  sync_acquire(token);
  return t.wait.result;
}

// ---------------------------------------------------------------- launches

void run_grid(void (*body)(void*), void* ctx, const void* kernel, dim3 grid, dim3 block) {
  const uint64_t threads = uint64_t{block.x} * block.y * block.z;
  if (threads == 0 || threads > 1024 || block.x > 1024 || block.y > 1024 || block.z > 64 || grid.x == 0 ||
      grid.y == 0 || grid.z == 0 || grid.x > 0x7fffffffu || grid.y > 65535 || grid.z > 65535) {
    g_last_error = 9;  // cudaErrorInvalidConfiguration, as a real launch reports it
    return;
  }
  if (g_block != nullptr) throw std::runtime_error("emulated CUDA: a kernel launch inside a kernel");
  const Schedule schedule = schedule_from_env();
  std::mt19937_64 rng(seed_from_env() * 0x9E3779B97F4A7C15ULL + g_launches++);
  while (g_fibers.size() < threads) g_fibers.push_back(std::make_unique<Fiber>());

  auto b = std::make_unique<Block>();
  b->body = body;
  b->ctx = ctx;
  b->grid = grid;
  b->block = block;
  b->nthreads = static_cast<int>(threads);
#ifdef UVIREID_EMU_TSAN
  b->host_tsan = __tsan_get_current_fiber();
#endif
  g_block = b.get();
  std::string error;
  for (unsigned z = 0; z < grid.z && error.empty(); ++z)
    for (unsigned y = 0; y < grid.y && error.empty(); ++y)
      for (unsigned x = 0; x < grid.x && error.empty(); ++x) {
        b->block_idx = {x, y, z};
        run_block(*b, schedule, rng);
        ++b->blocks_run;
        if (!b->error.empty()) error = block_header(*b, kernel_name(kernel)) + ": " + b->error;
      }
  g_block = nullptr;
  sync_acquire(&b->end_tokens[0]);
  sync_acquire(&b->end_tokens[1]);
  if (!error.empty()) throw std::runtime_error(error);
}

int take_last_error() {
  const int e = g_last_error;
  g_last_error = 0;
  return e;
}

const char* error_string(int error) {
  switch (error) {
    case 0: return "no error";
    case 1: return "invalid argument";
    case 9: return "invalid configuration argument";
  }
  return "unknown error";
}

}  // namespace emu
}  // namespace uvireid
