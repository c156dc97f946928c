// meshlockctl completion bash: a bash completion script generated from the
// commands and options actually registered, so it never falls out of date.
// Load it with:  source <(meshlockctl completion bash)
#include <algorithm>
#include <memory>
#include <set>

#include "cli/output.h"
#include "common/command.h"

namespace meshlock::cli {
namespace {

std::string optionWords(const CLI::App& app) {
  std::set<std::string> words;
  for (const CLI::Option* option : app.get_options()) {
    for (const std::string& name : option->get_lnames()) words.insert("--" + name);
    for (const std::string& name : option->get_snames()) words.insert("-" + name);
  }
  std::string out;
  for (const std::string& word : words) out += (out.empty() ? "" : " ") + word;
  return out;
}

std::string bashScript(const CLI::App& root) {
  std::string commands;
  std::string cases;
  auto subs = root.get_subcommands([](const CLI::App*) { return true; });
  std::sort(subs.begin(), subs.end(), [](const CLI::App* a, const CLI::App* b) { return a->get_name() < b->get_name(); });
  for (const CLI::App* sub : subs) {
    const std::string& name = sub->get_name();
    commands += (commands.empty() ? "" : " ") + name;
    cases += "    " + name + ") words=\"" + optionWords(*sub) + "\" ;;\n";
  }
  std::string formats;
  for (const auto& [name, choices] : outputFormatsByCommand()) {
    std::string list;
    for (const std::string& choice : choices) list += (list.empty() ? "" : " ") + choice;
    formats += "        " + name + ") COMPREPLY=($(compgen -W \"" + list + "\" -- \"$cur\")) ;;\n";
  }
  return "# bash completion for meshlockctl. Load with: source <(meshlockctl completion bash)\n"
         "_meshlockctl() {\n"
         "  local cur prev sub words i\n"
         "  cur=\"${COMP_WORDS[COMP_CWORD]}\"\n"
         "  prev=\"${COMP_WORDS[COMP_CWORD-1]}\"\n"
         "  sub=\"\"\n"
         "  for ((i = 1; i < COMP_CWORD; i++)); do\n"
         "    case \"${COMP_WORDS[i]}\" in -*) ;; *) sub=\"${COMP_WORDS[i]}\"; break ;; esac\n"
         "  done\n"
         "  case \"$prev\" in\n"
         "    -o|--output)\n"
         "      case \"$sub\" in\n" +
         formats +
         "      esac\n"
         "      return ;;\n"
         "    --admin)\n"
         "      COMPREPLY=($(compgen -W \"unix:/run/meshlock/admin.sock http://127.0.0.1:15000\" -- \"$cur\"))\n"
         "      return ;;\n"
         "    -l|--level)\n"
         "      COMPREPLY=($(compgen -W \"trace debug info warn error critical off\" -- \"$cur\"))\n"
         "      return ;;\n"
         "  esac\n"
         "  if [[ -z \"$sub\" ]]; then\n"
         "    COMPREPLY=($(compgen -W \"" + commands + " --help --version\" -- \"$cur\"))\n"
         "    return\n"
         "  fi\n"
         "  case \"$sub\" in\n" +
         cases +
         "    *) words=\"--help\" ;;\n"
         "  esac\n"
         "  if [[ \"$sub\" == completion && \"$cur\" != -* ]]; then words=\"bash $words\"; fi\n"
         "  COMPREPLY=($(compgen -W \"$words\" -- \"$cur\"))\n"
         "}\n"
         "complete -F _meshlockctl meshlockctl\n";
}

const CommandRegistrar kCompletion{{
    "completion",
    "Print a shell completion script (bash): source <(meshlockctl completion bash)",
    [](CLI::App& sub) -> CommandAction {
      auto shell = std::make_shared<std::string>();
      sub.add_option("shell", *shell, "shell to complete for (bash)")->required()->check(CLI::IsMember({"bash"}));
      CLI::App* root = &sub;
      while (root->get_parent() != nullptr) root = root->get_parent();
      return [root, shell] {
        std::fputs(bashScript(*root).c_str(), stdout);
        return kExitOk;
      };
    },
}};

}  // namespace
}  // namespace meshlock::cli
