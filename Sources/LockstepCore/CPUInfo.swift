#if canImport(Glibc)
import Glibc
#else
import Darwin
#endif

/// What /proc/cpuinfo says about the first CPU (empty values where there is no /proc, e.g. macOS).
public enum CPUInfo {
    /// The "model name" line, e.g. "Intel(R) Xeon(R) Processor" ("unknown" if absent).
    public static let modelName: String = field("model name") ?? "unknown"
    /// Model name with family and model number, e.g. "Intel(R) Xeon(R) Processor (family 6 model 207)": virtual
    /// machines often hide the marketing name, and the numbers are what decides OpenBLAS's kernel choice.
    public static let description: String = {
        guard let family = field("cpu family"), let model = field("model") else { return modelName }
        return "\(modelName) (family \(family) model \(model))"
    }()
    /// The "vendor_id" line, e.g. "GenuineIntel" or "AuthenticAMD".
    public static let vendor: String = field("vendor_id") ?? ""
    /// The feature flags ("avx2", "avx512f", …).
    public static let flags: Set<String> = Set((field("flags") ?? "").split(separator: " ").map(String.init))

    /// Bytes of level-2 cache per core (glibc's sysconf, else sysfs), or 1 MiB where neither says.
    public static let level2CacheBytes: Int = {
        #if os(Linux)
        let reported = sysconf(Int32(_SC_LEVEL2_CACHE_SIZE))
        if reported > 0 { return reported }
        if let file = fopen("/sys/devices/system/cpu/cpu0/cache/index2/size", "r") {  // e.g. "2048K"
            defer { fclose(file) }
            var line: UnsafeMutablePointer<CChar>?
            var capacity = 0
            defer { free(line) }
            if getline(&line, &capacity, file) > 0, let line,
               let kibibytes = Int(String(cString: line).prefix { $0.isNumber }), kibibytes > 0 {
                return kibibytes * 1024
            }
        }
        #endif
        return 1 << 20
    }()

    /// The value of the first `name : value` line, read with plain libc (this runs before anything else in `lockstep`).
    private static func field(_ name: String) -> String? {
        guard let file = fopen("/proc/cpuinfo", "r") else { return nil }
        defer { fclose(file) }
        var line: UnsafeMutablePointer<CChar>?
        var capacity = 0
        defer { free(line) }
        while getline(&line, &capacity, file) > 0, let line {
            let text = String(cString: line)
            guard let colon = text.firstIndex(of: ":"),
                  text[..<colon].trimmingCharacters(in: " \t") == name else { continue }
            return text[text.index(after: colon)...].trimmingCharacters(in: " \t\n")
        }
        return nil
    }
}

extension StringProtocol {
    /// Drops leading and trailing characters in `set` (Foundation-free).
    fileprivate func trimmingCharacters(in set: String) -> String {
        var slice = Substring(self)
        while let first = slice.first, set.contains(first) { slice = slice.dropFirst() }
        while let last = slice.last, set.contains(last) { slice = slice.dropLast() }
        return String(slice)
    }
}
