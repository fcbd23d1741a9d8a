// SLUICE_SANITIZED is defined in an ASan or TSan build, by GCC or clang
// (GCC defines __SANITIZE_ADDRESS__/__SANITIZE_THREAD__; clang 14 only
// answers __has_feature). Tests that bound memory use skip those bounds
// there: the sanitizers' shadow memory and quarantine inflate RSS.
#pragma once

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define SLUICE_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define SLUICE_SANITIZED 1
#endif
#endif
