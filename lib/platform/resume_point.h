// A resume point: where a thread of a restored process goes on.  Like
// setjmp, resume_point_save() records the callee-saved registers, the stack
// pointer, the return address and the floating-point control words, and
// returns 0; a restore (restorer/blob.cc) loads them into a new thread of
// the same address space and the call returns again, with 1.  The frame of
// the function that called it must still be live when the process image is
// taken (a resume point saved in a function that has since returned is
// garbage); between the save and the image the function may go on, and
// its locals then hold their later values, as after longjmp.  No pointer
// mangling: the restorer, not libc, reads it.
#pragma once

#include <cstdint>

namespace mmtier::detail {

// The layout the restorer reads (restorer/plan.h repeats it).
struct resume_point {
  uint64_t rbx, rbp, r12, r13, r14, r15;
  uint64_t rsp;    // after the return
  uint64_t rip;    // the return address
  uint32_t mxcsr;  // SSE control and status
  uint16_t fpucw;  // x87 control word
  uint16_t reserved;
};
static_assert(sizeof(resume_point) == 72);

extern "C" int mmtier_resume_point_save(resume_point *rp) __attribute__((returns_twice));

inline constexpr bool kResumePoints =
#if defined(__x86_64__)
    true;
#else
    false;
#endif

}  // namespace mmtier::detail
