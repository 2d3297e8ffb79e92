#ifndef RUNFLEET_HOOK_UNITTEST_H
#define RUNFLEET_HOOK_UNITTEST_H

/* Functions marked UNITTEST are static in release builds and visible to
 * the cmocka programs in test builds (curl's tests/unit convention), as in
 * manager/src/unittest.h. Their prototypes sit in each header under
 * #ifdef RUNFLEET_UNITTEST. */
#ifdef RUNFLEET_UNITTEST
#define UNITTEST
#else
#define UNITTEST static
#endif

#endif
