// Runs fake_istiod.py (Debian's python3-grpcio standing in for istiod's CA)
// for the CA client tests: start, wait for its port, stop it by its PID.
#pragma once

#include <gtest/gtest.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace meshlock::identity::testing {

class FakeIstiod {
 public:
  struct Options {
    std::string mode = "ok";
    int port = 0;              // 0: any free port
    double listenDelay = 0;    // seconds before it listens (a CA that is down, then up)
    double slow = 3;           // seconds the "slow" mode sleeps per request
    std::filesystem::path tokenFile;  // when set, the Bearer token must match it
  };

  FakeIstiod(std::filesystem::path dir, Options options) : dir_(std::move(dir)) {
    std::filesystem::create_directories(dir_);
    std::vector<std::string> args = {"/usr/bin/python3", MESHLOCK_SOURCE_DIR "/tests/agent/identity/fake_istiod.py",
                                     "--dir", dir_.string(), "--pb2", MESHLOCK_CA_PB2_DIR, "--mode", options.mode,
                                     "--port", std::to_string(options.port), "--listen-delay",
                                     std::to_string(options.listenDelay), "--slow", std::to_string(options.slow)};
    if (!options.tokenFile.empty()) {
      args.push_back("--token-file");
      args.push_back(options.tokenFile.string());
    }
    pid_ = ::fork();
    if (pid_ == 0) {
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);  // never outlives a crashed test
      std::vector<char*> argv;
      for (auto& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      ::execv(argv[0], argv.data());
      ::_exit(127);
    }
  }
  ~FakeIstiod() { stop(); }
  FakeIstiod(const FakeIstiod&) = delete;
  FakeIstiod& operator=(const FakeIstiod&) = delete;

  // The root it made (written before it listens); bounded wait.
  [[nodiscard]] bool waitForRoot() const { return waitForFile(dir_ / "root-cert.pem"); }
  // Its port once it listens; 0 when it did not come up.
  [[nodiscard]] int waitForPort() const {
    if (!waitForFile(dir_ / "port")) return 0;
    std::ifstream in(dir_ / "port");
    int port = 0;
    in >> port;
    return port;
  }
  [[nodiscard]] std::filesystem::path rootFile() const { return dir_ / "root-cert.pem"; }
  // The requests it saw, one JSON object a line.
  [[nodiscard]] std::vector<std::string> requests() const {
    std::ifstream in(dir_ / "requests.jsonl");
    std::vector<std::string> lines;
    for (std::string line; std::getline(in, line);) lines.push_back(line);
    return lines;
  }
  void stop() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGKILL);
    int status = 0;
    ::waitpid(pid_, &status, 0);
    pid_ = -1;
  }

 private:
  [[nodiscard]] bool waitForFile(const std::filesystem::path& path) const {
    for (int i = 0; i < 300; ++i) {  // 30 s: python3 and grpc take a moment to load
      if (std::filesystem::exists(path)) return true;
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {  // it died
        pid_ = -1;
        return false;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return false;
  }

  std::filesystem::path dir_;
  mutable pid_t pid_ = -1;
};

// A free loopback port (bound, read, closed): for a CA that comes up later.
inline int freeLoopbackPort() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  socklen_t len = sizeof(addr);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(fd);
  return ntohs(addr.sin_port);
}

}  // namespace meshlock::identity::testing
