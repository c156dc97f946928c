// Loader, pod registration and original-destination lookup (datapath.h).
#include "capture/datapath.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <sys/mount.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <map>
#include <system_error>

#include "capture/bpffs.h"
#include "capture/netns.h"
#include "capture/pod_discovery.h"
#include "capture_connect.skel.h"
#include "capture_reuseport.skel.h"
#include "capture_sk_lookup.skel.h"
#include "capture_sk_msg.skel.h"
#include "capture_sockops.skel.h"

namespace meshlock::capture {

namespace fs = std::filesystem;

namespace {

struct ConnectSkelDeleter {
  void operator()(capture_connect* s) const { capture_connect__destroy(s); }
};
struct SockopsSkelDeleter {
  void operator()(capture_sockops* s) const { capture_sockops__destroy(s); }
};
struct SkLookupSkelDeleter {
  void operator()(capture_sk_lookup* s) const { capture_sk_lookup__destroy(s); }
};
struct SkMsgSkelDeleter {
  void operator()(capture_sk_msg* s) const { capture_sk_msg__destroy(s); }
};
struct ReuseportSkelDeleter {
  void operator()(capture_reuseport* s) const { capture_reuseport__destroy(s); }
};

std::string libbpfError(int err) {
  char buf[128] = {};
  libbpf_strerror(err, buf, sizeof(buf));
  return buf;
}

bool isSharedMap(std::string_view name) {
  return std::find(kSharedMapNames.begin(), kSharedMapNames.end(), name) != kSharedMapNames.end();
}

// Pins every shared map of `obj` under maps/, so each object reuses the
// instance the first one created (and a restarted agent the old ones).
Status pinSharedMaps(bpf_object* obj, const fs::path& maps_dir) {
  bpf_map* map = nullptr;
  bpf_object__for_each_map(map, obj) {
    const char* name = bpf_map__name(map);
    if (!isSharedMap(name)) continue;
    std::string path = (maps_dir / name).string();
    if (int err = bpf_map__set_pin_path(map, path.c_str()); err != 0)
      return failErrno("bpf_map__set_pin_path " + path, -err);
  }
  return {};
}

std::uint32_t legMode(LegShortcut shortcut) {
  switch (shortcut) {
    case LegShortcut::Off: return ML_LEG_OFF;
    case LegShortcut::AppToAgent: return ML_LEG_APP_TO_AGENT;
    case LegShortcut::Both: return ML_LEG_BOTH;
  }
  return ML_LEG_OFF;
}

// A pinned counter array of another size (an agent of another version
// pinned it) cannot be reused: libbpf refuses the whole load. Counters are
// only counters: unpin it, and this agent starts a new one (the old
// programs keep theirs until they are replaced).
void dropPinnedCountersOfAnotherSize(const fs::path& maps_dir) {
  const fs::path pin = maps_dir / "ml_counters";
  UniqueFd fd(bpf_obj_get(pin.c_str()));
  if (!fd) return;
  bpf_map_info info{};
  std::uint32_t len = sizeof info;
  if (bpf_obj_get_info_by_fd(fd.get(), &info, &len) == 0 && info.max_entries != ML_CTR_MAX) ::unlink(pin.c_str());
}

bool validPodUid(const std::string& uid) {
  if (uid.empty() || uid.size() > 128) return false;
  return std::all_of(uid.begin(), uid.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.';
  }) && uid != "." && uid != "..";
}

// Attaches `prog_fd` at `target_fd`, or swaps it into the link pinned at
// `pin` if there is one. Returns whether a pinned link was reused.
Result<bool> attachOrUpdate(int prog_fd, int target_fd, bpf_attach_type type, const fs::path& pin) {
  std::error_code ec;
  if (fs::exists(pin, ec)) {
    UniqueFd link(bpf_obj_get(pin.c_str()));
    if (!link) return failErrno("bpf_obj_get " + pin.string());
    if (bpf_link_update(link.get(), prog_fd, nullptr) == 0) return true;
    int err = errno;
    // The link's target is gone (e.g. the netns died): replace it.
    if (err != ENOLINK) return failErrno("bpf_link_update " + pin.string(), err);
    ::unlink(pin.c_str());
  }
  UniqueFd link(bpf_link_create(prog_fd, target_fd, type, nullptr));
  if (!link) return failErrno("bpf_link_create for " + pin.string());
  if (bpf_obj_pin(link.get(), pin.c_str()) != 0) return failErrno("bpf_obj_pin " + pin.string());
  return false;
}

// Deletes every entry of `map_fd` that belongs to the pod.
template <typename Key>
void deleteMatching(int map_fd, std::uint64_t pod_cgroup_id,
                    std::uint64_t (*podOf)(int map_fd, const Key& key)) {
  Key key{}, next{};
  std::vector<Key> doomed;
  const Key* prev = nullptr;
  while (bpf_map_get_next_key(map_fd, prev, &next) == 0) {
    if (podOf(map_fd, next) == pod_cgroup_id) doomed.push_back(next);
    key = next;
    prev = &key;
  }
  for (const Key& k : doomed) bpf_map_delete_elem(map_fd, &k);
}

}  // namespace

static Result<Counters> readCounters(int counters_fd);

Result<fs::path> agentCgroupFor(const fs::path& pods_root) {
  auto dir = ownCgroup2Dir();
  if (!dir) return std::unexpected(dir.error());
  auto mount = findCgroup2Mount();
  if (mount && *dir == *mount)
    return fail("the agent runs in the root cgroup (v2): sockops there would see every socket of the machine; "
                "run it in a cgroup of its own (its DaemonSet pod on a node)");
  const std::string root = pods_root.lexically_normal().string();
  const std::string mine = dir->lexically_normal().string();
  if (mine == root || mine.rfind(root + "/", 0) == 0) return fs::path();  // seen from the pods root already
  return *dir;
}

struct Datapath::State {
  DatapathConfig config;
  std::unique_ptr<capture_connect, ConnectSkelDeleter> connect;
  std::unique_ptr<capture_sockops, SockopsSkelDeleter> sockops;
  std::unique_ptr<capture_sk_lookup, SkLookupSkelDeleter> sk_lookup;
  std::unique_ptr<capture_reuseport, ReuseportSkelDeleter> reuseport;
  std::unique_ptr<capture_sk_msg, SkMsgSkelDeleter> sk_msg;  // only with the shortcut on
  bool reused_links = false;
  int pod_cgroups_fd = -1, pod_addrs_fd = -1, ports_fd = -1, listeners_fd = -1, orig_dst_fd = -1,
      counters_fd = -1;  // owned by the connect skeleton

  fs::path mapsDir() const { return config.pin_dir / "maps"; }
  fs::path linksDir() const { return config.pin_dir / "links"; }
  fs::path podsDir() const { return config.pin_dir / "pods"; }
  fs::path podDir(const PodUid& uid, std::uint64_t cgid) const {
    return podsDir() / (uid.value + "@" + std::to_string(cgid));
  }
};

Datapath::Datapath(std::unique_ptr<State> state) : state_(std::move(state)) {}
Datapath::Datapath(Datapath&&) noexcept = default;
Datapath& Datapath::operator=(Datapath&&) noexcept = default;
Datapath::~Datapath() = default;

const DatapathConfig& Datapath::config() const { return state_->config; }
bool Datapath::reusedPinnedLinks() const { return state_->reused_links; }

Status Datapath::markAgentUpstream(int fd) const {
  if (state_->config.pod_leg_shortcut == LegShortcut::Off) return {};
  const std::uint32_t mark = ML_LEG_MARK_AGENT_UPSTREAM;
  if (bpf_map__update_elem(state_->connect->maps.ml_leg_marks, &fd, sizeof fd, &mark, sizeof mark, BPF_ANY) != 0)
    return failErrno("mark the agent's socket for the pod-local shortcut");
  return {};
}

Result<Datapath> Datapath::install(const DatapathConfig& config) {
  auto state = std::make_unique<State>();
  state->config = config;
  if (config.agent_ports.size() > ML_MAX_AGENT_PORTS)
    return fail("at most " + std::to_string(ML_MAX_AGENT_PORTS) + " agent ports");
  if (config.pods_cgroup_root.empty()) return fail("no pods cgroup root given");

  if (auto ok = config.mount_bpffs ? ensureBpffs(config.pin_dir) : requireBpffs(config.pin_dir); !ok)
    return std::unexpected(ok.error());
  std::error_code ec;
  for (const fs::path& dir : {state->mapsDir(), state->linksDir(), state->podsDir()}) {
    fs::create_directories(dir, ec);
    if (ec) return fail("create " + dir.string() + ": " + ec.message());
  }

  auto root_id = cgroupId(config.pods_cgroup_root);
  if (!root_id) return std::unexpected(root_id.error().context("pods cgroup root"));
  UniqueFd cgroup_fd(::open(config.pods_cgroup_root.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!cgroup_fd) return failErrno("open " + config.pods_cgroup_root.string());

  state->connect.reset(capture_connect__open());
  state->sockops.reset(capture_sockops__open());
  state->sk_lookup.reset(capture_sk_lookup__open());
  if (!state->connect || !state->sockops || !state->sk_lookup)
    return failErrno("open BPF skeletons");

  auto& rc = *state->connect->rodata;
  rc.pods_root_cgroup_id = *root_id;
  rc.outbound_port = config.outbound_port;
  for (std::size_t i = 0; i < config.agent_ports.size(); ++i) {
    rc.agent_ports[i] = config.agent_ports[i];
    state->sk_lookup->rodata->agent_ports[i] = config.agent_ports[i];
  }

  const std::uint32_t leg_mode = legMode(config.pod_leg_shortcut);
  state->sockops->rodata->pod_legs = leg_mode;
  state->sockops->rodata->outbound_port = config.outbound_port;
  if (config.pod_leg_shortcut != LegShortcut::Off) {
    state->sk_msg.reset(capture_sk_msg__open());
    if (!state->sk_msg) return failErrno("open BPF skeleton sk_msg");
    state->sk_msg->rodata->leg_mode = leg_mode;
  }

  for (bpf_object* obj : {state->connect->obj, state->sockops->obj, state->sk_lookup->obj}) {
    if (auto ok = pinSharedMaps(obj, state->mapsDir()); !ok) return std::unexpected(ok.error());
  }
  if (state->sk_msg)
    if (auto ok = pinSharedMaps(state->sk_msg->obj, state->mapsDir()); !ok) return std::unexpected(ok.error());
  dropPinnedCountersOfAnotherSize(state->mapsDir());
  if (int err = capture_connect__load(state->connect.get()); err != 0)
    return fail("load connect programs: " + libbpfError(err));
  if (int err = capture_sockops__load(state->sockops.get()); err != 0)
    return fail("load sockops program: " + libbpfError(err));
  if (int err = capture_sk_lookup__load(state->sk_lookup.get()); err != 0)
    return fail("load sk_lookup program: " + libbpfError(err));
  state->reuseport.reset(capture_reuseport__open_and_load());
  if (!state->reuseport) return failErrno("load sk_reuseport program");
  if (state->sk_msg) {
    if (int err = capture_sk_msg__load(state->sk_msg.get()); err != 0)
      return fail("load sk_msg program (the pod-local shortcut; turn it off with podLegShortcut: off): " +
                  libbpfError(err));
    // Attached to the pinned sockhash itself: a new agent's program replaces the old one.
    if (bpf_prog_attach(bpf_program__fd(state->sk_msg->progs.ml_pod_leg_msg),
                        bpf_map__fd(state->connect->maps.ml_pod_legs), BPF_SK_MSG_VERDICT, 0) != 0)
      return failErrno("attach sk_msg to ml_pod_legs");
  }

  auto& maps = state->connect->maps;
  state->pod_cgroups_fd = bpf_map__fd(maps.ml_pod_cgroups);
  state->pod_addrs_fd = bpf_map__fd(maps.ml_pod_addrs);
  state->ports_fd = bpf_map__fd(maps.ml_ports);
  state->listeners_fd = bpf_map__fd(maps.ml_listeners);
  state->orig_dst_fd = bpf_map__fd(maps.ml_orig_dst);
  state->counters_fd = bpf_map__fd(maps.ml_counters);

  struct Hook {
    const char* name;
    bpf_program* prog;
    bpf_attach_type type;
  };
  const Hook hooks[] = {
      {"connect4", state->connect->progs.ml_connect4, BPF_CGROUP_INET4_CONNECT},
      {"connect6", state->connect->progs.ml_connect6, BPF_CGROUP_INET6_CONNECT},
      {"sockops", state->sockops->progs.ml_sockops, BPF_CGROUP_SOCK_OPS},
  };
  for (const Hook& hook : hooks) {
    auto reused = attachOrUpdate(bpf_program__fd(hook.prog), cgroup_fd.get(), hook.type,
                                 state->linksDir() / hook.name);
    if (!reused) return std::unexpected(reused.error().context(std::string("attach ") + hook.name));
    state->reused_links = state->reused_links || *reused;
  }
  // The agent's own sockets, where its cgroup is not below the pods root.
  const fs::path agent_link = state->linksDir() / "sockops-agent";
  if (config.pod_leg_shortcut != LegShortcut::Off && !config.agent_cgroup.empty()) {
    UniqueFd agent_cg(::open(config.agent_cgroup.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!agent_cg) return failErrno("open " + config.agent_cgroup.string());
    auto reused = attachOrUpdate(bpf_program__fd(state->sockops->progs.ml_sockops), agent_cg.get(),
                                 BPF_CGROUP_SOCK_OPS, agent_link);
    if (!reused) return std::unexpected(reused.error().context("attach sockops at the agent's cgroup"));
  } else if (fs::exists(agent_link, ec)) {
    UniqueFd link(bpf_obj_get(agent_link.c_str()));
    if (link) bpf_link_detach(link.get());
    ::unlink(agent_link.c_str());
  }

  // Pods enrolled by a previous process keep their sk_lookup links; move
  // them to the new program now, and drop the ones whose netns is gone.
  int sk_lookup_fd = bpf_program__fd(state->sk_lookup->progs.ml_sk_lookup);
  for (const auto& entry : fs::directory_iterator(state->podsDir(), ec)) {
    fs::path pin = entry.path() / "sk_lookup";
    UniqueFd link(bpf_obj_get(pin.c_str()));
    if (!link) continue;
    if (bpf_link_update(link.get(), sk_lookup_fd, nullptr) != 0) {
      // Defunct (netns gone): forget this pod.
      link.reset();
      ::unlink(pin.c_str());
      ::rmdir(entry.path().c_str());
    }
  }
  return Datapath(std::move(state));
}

Status Datapath::uninstall(const fs::path& pin_dir) {
  std::error_code ec;
  if (!fs::exists(pin_dir, ec)) return {};
  if (!isOnBpffs(pin_dir)) return fail(pin_dir.string() + " is not on a bpffs: refusing to remove it");
  std::vector<fs::path> links;
  for (const auto& entry : fs::directory_iterator(pin_dir / "links", ec)) links.push_back(entry.path());
  for (const auto& pod : fs::directory_iterator(pin_dir / "pods", ec)) {
    if (fs::exists(pod.path() / "sk_lookup", ec)) links.push_back(pod.path() / "sk_lookup");
  }
  // Detach first: a link held open elsewhere would otherwise stay attached.
  for (const fs::path& pin : links) {
    UniqueFd link(bpf_obj_get(pin.c_str()));
    if (link) bpf_link_detach(link.get());
  }
  // Then remove every pin and directory below pin_dir.
  std::vector<fs::path> all;
  for (auto it = fs::recursive_directory_iterator(pin_dir, ec); it != fs::recursive_directory_iterator();
       it.increment(ec)) {
    all.push_back(it->path());
  }
  std::sort(all.begin(), all.end(), [](const fs::path& a, const fs::path& b) {
    return a.string().size() > b.string().size();  // children before parents
  });
  for (const fs::path& p : all) {
    if (fs::is_directory(fs::symlink_status(p, ec))) ::rmdir(p.c_str());
    else ::unlink(p.c_str());
  }
  // A bpffs mounted on the pin dir itself (see ensureBpffs) goes too.
  if (isOnBpffs(pin_dir) && !isOnBpffs(pin_dir.parent_path())) ::umount2(pin_dir.c_str(), MNT_DETACH);
  if (::rmdir(pin_dir.c_str()) != 0 && errno != ENOENT)
    return failErrno("remove " + pin_dir.string());
  return {};
}

namespace {

// The pod's port rules become exactly those of `pod`: new rules are written
// before stale ones are deleted, so no connection sees a pod without rules.
Status replacePortRules(int ports_fd, std::uint64_t cgid, const PodSpec& pod) {
  std::vector<ml_port_key> wanted;
  auto put = [&](std::uint16_t port, std::uint8_t dir, std::uint32_t verdict) -> Status {
    ml_port_key key{};
    key.pod_cgroup_id = cgid;
    key.port = port;
    key.direction = dir;
    if (bpf_map_update_elem(ports_fd, &key, &verdict, BPF_ANY) != 0)
      return failErrno("ml_ports update for port " + std::to_string(port));
    wanted.push_back(key);
    return {};
  };
  for (auto p : pod.inbound_ports)
    if (auto ok = put(p, ML_DIR_INBOUND, ML_PORT_CAPTURE); !ok) return ok;
  for (auto p : pod.excluded_inbound_ports)
    if (auto ok = put(p, ML_DIR_INBOUND, ML_PORT_EXCLUDE); !ok) return ok;
  for (auto p : pod.excluded_outbound_ports)
    if (auto ok = put(p, ML_DIR_OUTBOUND, ML_PORT_EXCLUDE); !ok) return ok;

  std::vector<ml_port_key> stale;
  ml_port_key key{}, next{};
  const ml_port_key* prev = nullptr;
  while (bpf_map_get_next_key(ports_fd, prev, &next) == 0) {
    if (next.pod_cgroup_id == cgid &&
        std::none_of(wanted.begin(), wanted.end(), [&](const ml_port_key& w) {
          return w.port == next.port && w.direction == next.direction;
        }))
      stale.push_back(next);
    key = next;
    prev = &key;
  }
  for (const ml_port_key& k : stale) bpf_map_delete_elem(ports_fd, &k);
  return {};
}

std::uint64_t portKeyPod(int, const ml_port_key& key) { return key.pod_cgroup_id; }
std::uint64_t addrKeyPod(int fd, const ml_addr& key) {
  ml_pod value{};
  if (bpf_map_lookup_elem(fd, &key, &value) != 0) return 0;
  return value.pod_cgroup_id;
}

ml_pod podValue(std::uint64_t cgid, const PodSpec& pod) {
  ml_pod value{};
  value.pod_cgroup_id = cgid;
  if (pod.capture_outbound) value.flags |= ML_POD_OUTBOUND;
  if (pod.capture_inbound) value.flags |= ML_POD_INBOUND;
  if (!pod.inbound_ports.empty()) value.flags |= ML_POD_INBOUND_LISTED_PORTS;
  if (pod.inbound_fail_closed) value.flags |= ML_POD_INBOUND_FAIL_CLOSED;
  return value;
}

// A listener on loopback, or an invalid fd when the netns has no such
// loopback address (IPv6 disabled).
Result<UniqueFd> optionalListener(int netns_fd, const SocketAddress& addr, int reuseport_prog_fd) {
  auto fd = openListenerInNetns(netns_fd, addr, 1024, reuseport_prog_fd);
  if (!fd && (fd.error().sys_errno == EADDRNOTAVAIL || fd.error().sys_errno == EAFNOSUPPORT))
    return UniqueFd();
  return fd;
}

}  // namespace

Status Datapath::updatePodRules(const PodSpec& pod) {
  auto cgid = cgroupId(pod.cgroup_dir);
  if (!cgid) return std::unexpected(cgid.error().context("pod " + pod.name));
  auto& s = *state_;
  // Port rules first, then the flags of every pod entry.
  if (auto ok = replacePortRules(s.ports_fd, *cgid, pod); !ok)
    return std::unexpected(ok.error().context("pod " + pod.name));
  ml_pod value = podValue(*cgid, pod);
  ml_addr key{}, next{};
  const ml_addr* prev = nullptr;
  std::vector<ml_addr> addrs;
  while (bpf_map_get_next_key(s.pod_addrs_fd, prev, &next) == 0) {
    if (addrKeyPod(s.pod_addrs_fd, next) == *cgid) addrs.push_back(next);
    key = next;
    prev = &key;
  }
  for (const ml_addr& a : addrs) bpf_map_update_elem(s.pod_addrs_fd, &a, &value, BPF_EXIST);
  if (bpf_map_update_elem(s.pod_cgroups_fd, &*cgid, &value, BPF_EXIST) != 0)
    return failErrno("pod " + pod.name + ": not enrolled");
  return {};
}

Result<PodListeners> Datapath::enrollPod(const PodSpec& pod) {
  auto& s = *state_;
  const std::string who = "pod " + (pod.name.empty() ? pod.uid.value : pod.name);
  if (!validPodUid(pod.uid.value)) return fail(who + ": invalid uid '" + pod.uid.value + "'");
  auto cgid = cgroupId(pod.cgroup_dir);
  if (!cgid) return std::unexpected(cgid.error().context(who));

  PodListeners out;
  out.pod_cgroup_id = *cgid;
  fs::path netns_path = pod.netns_path;
  if (netns_path.empty()) {
    auto found = findPodNetns(pod.cgroup_dir);
    if (!found) return std::unexpected(found.error().context(who));
    netns_path = *found;
  }
  auto netns = openNetns(netns_path);
  if (!netns) return std::unexpected(netns.error().context(who));
  out.netns = std::move(*netns);

  out.addresses = pod.addresses;
  if (out.addresses.empty()) {
    auto addrs = netnsAddresses(out.netns.get());
    if (!addrs) return std::unexpected(addrs.error().context(who));
    out.addresses = std::move(*addrs);
  }

  const SocketAddress out4{IpAddress::v4(0x7f000001), s.config.outbound_port};
  const SocketAddress in4{IpAddress::v4(0x7f000001), s.config.inbound_port};
  SocketAddress out6{*IpAddress::parse("::1"), s.config.outbound_port};
  SocketAddress in6{*IpAddress::parse("::1"), s.config.inbound_port};
  // SO_REUSEPORT: the previous agent process may still listen here (a
  // rolling update with surge); connections it leaves queued move to these.
  const int reuseport = bpf_program__fd(s.reuseport->progs.ml_reuseport);
  auto o4 = openListenerInNetns(out.netns.get(), out4, 1024, reuseport);
  if (!o4) return std::unexpected(o4.error().context(who + ": outbound listener"));
  auto i4 = openListenerInNetns(out.netns.get(), in4, 1024, reuseport);
  if (!i4) return std::unexpected(i4.error().context(who + ": inbound listener"));
  auto o6 = optionalListener(out.netns.get(), out6, reuseport);
  if (!o6) return std::unexpected(o6.error().context(who + ": outbound IPv6 listener"));
  auto i6 = optionalListener(out.netns.get(), in6, reuseport);
  if (!i6) return std::unexpected(i6.error().context(who + ": inbound IPv6 listener"));
  out.outbound_v4 = std::move(*o4);
  out.inbound_v4 = std::move(*i4);
  out.outbound_v6 = std::move(*o6);
  out.inbound_v6 = std::move(*i6);
  auto cookie = socketNetnsCookie(out.outbound_v4.get());
  if (!cookie) return std::unexpected(cookie.error().context(who));
  out.netns_cookie = *cookie;

  // Rules and listeners first, the pod's cgroup entry last: capture starts
  // only once everything it needs is in place.
  if (auto ok = replacePortRules(s.ports_fd, *cgid, pod); !ok) return std::unexpected(ok.error().context(who));
  for (auto [family, fd] : {std::pair{AF_INET, out.inbound_v4.get()}, std::pair{AF_INET6, out.inbound_v6.get()}}) {
    ml_listener_key key{};
    key.pod_cgroup_id = *cgid;
    key.family = static_cast<std::uint32_t>(family);
    if (fd < 0) {
      bpf_map_delete_elem(s.listeners_fd, &key);
      continue;
    }
    std::uint64_t value = static_cast<std::uint64_t>(fd);
    if (bpf_map_update_elem(s.listeners_fd, &key, &value, BPF_ANY) != 0)
      return failErrno(who + ": put inbound listener in ml_listeners");
  }
  const ml_pod value = podValue(*cgid, pod);
  for (const IpAddress& ip : out.addresses) {
    ml_addr key;
    toBpf(ip, key);
    if (bpf_map_update_elem(s.pod_addrs_fd, &key, &value, BPF_ANY) != 0)
      return failErrno(who + ": ml_pod_addrs update for " + ip.toString());
  }
  // Addresses the pod no longer has (after the new ones are in: no gap).
  {
    std::vector<ml_addr> stale;
    ml_addr key{}, next{};
    const ml_addr* prev = nullptr;
    while (bpf_map_get_next_key(s.pod_addrs_fd, prev, &next) == 0) {
      if (addrKeyPod(s.pod_addrs_fd, next) == *cgid &&
          std::none_of(out.addresses.begin(), out.addresses.end(), [&](const IpAddress& ip) {
            ml_addr mine;
            toBpf(ip, mine);
            return std::memcmp(mine.bytes, next.bytes, sizeof(mine.bytes)) == 0;
          }))
        stale.push_back(next);
      key = next;
      prev = &key;
    }
    for (const ml_addr& a : stale) bpf_map_delete_elem(s.pod_addrs_fd, &a);
  }

  std::error_code ec;
  fs::path pod_dir = s.podDir(pod.uid, *cgid);
  fs::create_directories(pod_dir, ec);
  if (ec) return fail(who + ": create " + pod_dir.string() + ": " + ec.message());
  auto attached = attachOrUpdate(bpf_program__fd(s.sk_lookup->progs.ml_sk_lookup), out.netns.get(),
                                 BPF_SK_LOOKUP, pod_dir / "sk_lookup");
  if (!attached) return std::unexpected(attached.error().context(who + ": attach sk_lookup"));

  if (bpf_map_update_elem(s.pod_cgroups_fd, &*cgid, &value, BPF_ANY) != 0)
    return failErrno(who + ": ml_pod_cgroups update");
  return out;
}

std::vector<PinnedPod> Datapath::pinnedPods() const { return pinnedPods(state_->config.pin_dir); }

std::vector<PinnedPod> Datapath::pinnedPods(const fs::path& pin_dir) {
  std::vector<PinnedPod> out;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(pin_dir / "pods", ec)) {
    std::string name = entry.path().filename().string();
    auto at = name.rfind('@');
    if (at == std::string::npos) continue;
    PinnedPod pod;
    pod.uid.value = name.substr(0, at);
    pod.pod_cgroup_id = std::strtoull(name.c_str() + at + 1, nullptr, 10);
    out.push_back(pod);
  }
  return out;
}

Status Datapath::withdrawPod(const PodUid& uid) {
  auto& s = *state_;
  for (const PinnedPod& pod : pinnedPods()) {
    if (!(pod.uid == uid)) continue;
    const std::uint64_t cgid = pod.pod_cgroup_id;
    // Stop capturing first, then tear down what capture used.
    bpf_map_delete_elem(s.pod_cgroups_fd, &cgid);
    deleteMatching<ml_addr>(s.pod_addrs_fd, cgid, addrKeyPod);
    deleteMatching<ml_port_key>(s.ports_fd, cgid, portKeyPod);
    for (std::uint32_t family : {AF_INET, AF_INET6}) {
      ml_listener_key key{};
      key.pod_cgroup_id = cgid;
      key.family = family;
      bpf_map_delete_elem(s.listeners_fd, &key);
    }
    fs::path dir = s.podDir(pod.uid, cgid);
    fs::path pin = dir / "sk_lookup";
    UniqueFd link(bpf_obj_get(pin.c_str()));
    if (link) bpf_link_detach(link.get());
    ::unlink(pin.c_str());
    if (::rmdir(dir.c_str()) != 0) return failErrno("remove " + dir.string());
    return {};
  }
  return fail("pod " + uid.value + " is not enrolled");
}

Result<OriginalDestination> Datapath::originalDestination(int accepted_fd) {
  auto cookie = socketNetnsCookie(accepted_fd);
  if (!cookie) return std::unexpected(cookie.error().context("original destination"));
  auto peer = SocketAddress::peerOf(accepted_fd);
  if (!peer) return std::unexpected(peer.error().context("original destination"));
  ml_flow_key key{};
  key.netns_cookie = *cookie;
  toBpf(peer->ip, key.addr);
  key.port = peer->port;
  ml_orig_dst value{};
  if (bpf_map_lookup_elem(state_->orig_dst_fd, &key, &value) != 0)
    return failErrno("original destination of the connection from " + peer->toString());
  bpf_map_delete_elem(state_->orig_dst_fd, &key);
  OriginalDestination out;
  out.destination.ip = ipFromBpf(value.addr, value.family);
  out.destination.port = value.port;
  out.pod_cgroup_id = value.pod_cgroup_id;
  return out;
}

Result<Counters> Datapath::counters() const { return readCounters(state_->counters_fd); }

namespace {

std::string orUnknown(const char* name) { return name != nullptr ? name : "unknown"; }

// Entries of a hash-like map, by walking its keys (bounded by max_entries).
std::optional<std::uint32_t> countEntries(int fd, const bpf_map_info& info) {
  switch (info.type) {
    case BPF_MAP_TYPE_HASH:
    case BPF_MAP_TYPE_LRU_HASH:
    case BPF_MAP_TYPE_PERCPU_HASH:
    case BPF_MAP_TYPE_LRU_PERCPU_HASH:
    case BPF_MAP_TYPE_SOCKHASH:
      break;
    default:
      return std::nullopt;
  }
  std::vector<unsigned char> key(info.key_size), next(info.key_size);
  std::uint32_t count = 0;
  const void* prev = nullptr;
  while (count < info.max_entries && bpf_map_get_next_key(fd, prev, next.data()) == 0) {
    ++count;
    key.swap(next);
    prev = key.data();
  }
  return count;
}

}  // namespace

Result<DatapathInfo> Datapath::describe() const {
  const State& s = *state_;
  DatapathInfo out;
  struct Hook {
    const char* attach_type;
    const bpf_program* prog;
  };
  const Hook hooks[] = {
      {"cgroup/connect4", s.connect->progs.ml_connect4},
      {"cgroup/connect6", s.connect->progs.ml_connect6},
      {"sockops", s.sockops->progs.ml_sockops},
      {"sk_lookup", s.sk_lookup->progs.ml_sk_lookup},
      {"sk_msg", s.sk_msg ? s.sk_msg->progs.ml_pod_leg_msg : nullptr},
  };
  for (const Hook& hook : hooks) {
    if (hook.prog == nullptr) continue;  // sk_msg with the shortcut off
    bpf_prog_info info{};
    std::uint32_t len = sizeof info;
    if (bpf_obj_get_info_by_fd(bpf_program__fd(hook.prog), &info, &len) != 0)
      return failErrno(std::string("bpf_obj_get_info_by_fd program ") + hook.attach_type);
    out.programs.push_back({.name = info.name,
                            .type = orUnknown(libbpf_bpf_prog_type_str(static_cast<bpf_prog_type>(info.type))),
                            .attach_type = hook.attach_type,
                            .id = info.id,
                            .links = {}});
  }

  // The links pinned by this agent (or taken over from its predecessor).
  auto addLink = [&](const fs::path& pin, const std::string& what) {
    UniqueFd link(bpf_obj_get(pin.c_str()));
    if (!link) return;
    bpf_link_info info{};
    std::uint32_t len = sizeof info;
    if (bpf_obj_get_info_by_fd(link.get(), &info, &len) != 0) return;
    std::string target;
    if (info.type == BPF_LINK_TYPE_CGROUP) {
      target = "cgroup " + std::to_string(info.cgroup.cgroup_id) + " (" + what + ")";
    } else if (info.type == BPF_LINK_TYPE_NETNS) {
      target = "netns " + std::to_string(info.netns.netns_ino) + " (" + what + ")";
    } else {
      target = what;
    }
    for (ProgramInfo& prog : out.programs) {
      if (prog.id == info.prog_id) prog.links.push_back({.id = info.id, .target = std::move(target)});
    }
  };
  std::error_code ec;
  for (const char* name : {"connect4", "connect6", "sockops"})
    addLink(s.linksDir() / name, s.config.pods_cgroup_root.string());
  addLink(s.linksDir() / "sockops-agent", s.config.agent_cgroup.string());
  if (s.sk_msg) {  // attached to the map, not through a link
    for (ProgramInfo& prog : out.programs)
      if (prog.attach_type == "sk_msg") prog.links.push_back({.id = 0, .target = "map ml_pod_legs"});
  }
  for (const auto& entry : fs::directory_iterator(s.podsDir(), ec)) {
    const std::string dir = entry.path().filename().string();
    addLink(entry.path() / "sk_lookup", "pod " + dir.substr(0, dir.rfind('@')));
  }

  for (std::string_view name : kSharedMapNames) {
    const bpf_map* map = bpf_object__find_map_by_name(s.connect->obj, std::string(name).c_str());
    if (map == nullptr) continue;
    const int fd = bpf_map__fd(map);
    bpf_map_info info{};
    std::uint32_t len = sizeof info;
    if (bpf_obj_get_info_by_fd(fd, &info, &len) != 0) return failErrno("bpf_obj_get_info_by_fd map " + std::string(name));
    out.maps.push_back({.name = std::string(name),
                        .type = orUnknown(libbpf_bpf_map_type_str(static_cast<bpf_map_type>(info.type))),
                        .id = info.id,
                        .max_entries = info.max_entries,
                        .entries = countEntries(fd, info)});
  }
  return out;
}

Result<Counters> Datapath::pinnedCounters(const fs::path& pin_dir) {
  fs::path pin = pin_dir / "maps" / "ml_counters";
  UniqueFd fd(bpf_obj_get(pin.c_str()));
  if (!fd) return failErrno("bpf_obj_get " + pin.string());
  return readCounters(fd.get());
}

static Result<Counters> readCounters(int counters_fd) {
  int cpus = libbpf_num_possible_cpus();
  if (cpus <= 0) return failErrno("libbpf_num_possible_cpus", -cpus);
  std::vector<std::uint64_t> per_cpu(static_cast<std::size_t>(cpus));
  Counters out{};
  for (std::uint32_t i = 0; i < ML_CTR_MAX; ++i) {
    if (bpf_map_lookup_elem(counters_fd, &i, per_cpu.data()) != 0)
      return failErrno("read ml_counters");
    for (std::uint64_t v : per_cpu) out[i] += v;
  }
  return out;
}

}  // namespace meshlock::capture
