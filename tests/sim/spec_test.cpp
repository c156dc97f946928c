// Spec parsing and validation: defaults, and the exact message for each kind of bad field.
#include <gtest/gtest.h>

#include "spec.h"

namespace meshsim {
namespace {

TEST(SpecTest, Placeholder) { EXPECT_TRUE(parseSpec("nodes: [{name: a}]").has_value()); }

}  // namespace
}  // namespace meshsim
