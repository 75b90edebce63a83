import LockstepCore

/// A confusion matrix accumulated over batches, with per-class precision, recall, F1 and their averages.
///
/// Counts are plain numbers, so ranks merge their matrices by summing `counts` (an allreduce of Double is exact
/// up to 2^53 samples) and rebuilding with `init(classCount:counts:)`.
public struct ClassificationReport: Sendable, Equatable {
    /// Scores of one class.
    public struct ClassScores: Sendable, Equatable {
        /// Correct predictions of the class / all predictions of it (0 when it is never predicted).
        public var precision: Double
        /// Correct predictions of the class / samples of it (0 when it has no samples).
        public var recall: Double
        /// Harmonic mean of precision and recall (0 when both are 0).
        public var f1: Double
        /// Samples whose target is the class.
        public var support: Int

        /// Scores as given.
        public init(precision: Double, recall: Double, f1: Double, support: Int) {
            self.precision = precision; self.recall = recall; self.f1 = f1; self.support = support
        }
    }

    /// Number of classes.
    public let classCount: Int
    /// [target, prediction] row-major: counts[t · classCount + p] samples of class t were predicted as p.
    public private(set) var counts: [Double]

    /// An empty matrix for `classCount` classes.
    public init(classCount: Int) {
        precondition(classCount > 0, "ClassificationReport needs at least one class, got \(classCount)")
        self.classCount = classCount
        counts = [Double](repeating: 0, count: classCount * classCount)
    }

    /// A matrix from summed raw counts (e.g. after an allreduce of every rank's `counts`).
    public init(classCount: Int, counts: [Double]) {
        precondition(classCount > 0 && counts.count == classCount * classCount,
                     "ClassificationReport for \(classCount) classes needs \(classCount * classCount) counts, got \(counts.count)")
        self.classCount = classCount
        self.counts = counts
    }

    /// Adds a batch: the prediction of row b is the arg-max of logits [batch, classCount] (first on ties), its
    /// target the class index `targets[b]`. Targets outside 0..<classCount are a precondition failure.
    public mutating func add(logits: UnsafePointer<Float>, targets: UnsafePointer<Float>, batch: Int) {
        let classes = classCount
        counts.withUnsafeMutableBufferPointer { matrix in
            for b in 0..<batch {
                let row = logits + b * classes
                var best = 0
                for c in 1..<classes where row[c] > row[best] { best = c }
                let target = Int(targets[b])
                precondition(target >= 0 && target < classes, "target \(targets[b]) outside 0..<\(classes)")
                matrix[target * classes + best] += 1
            }
        }
    }

    /// Adds a batch of single-logit binary outputs (BCE with logits): logit > 0 predicts class 1. Needs 2 classes.
    public mutating func add(binaryLogits logits: UnsafePointer<Float>, targets: UnsafePointer<Float>, count: Int) {
        precondition(classCount == 2, "binary logits need a 2-class report, this one has \(classCount)")
        for i in 0..<count {
            let target = targets[i] > 0.5 ? 1 : 0, prediction = logits[i] > 0 ? 1 : 0
            counts[target * 2 + prediction] += 1
        }
    }

    /// Adds another matrix's counts (same class count).
    public mutating func merge(_ other: ClassificationReport) {
        precondition(other.classCount == classCount, "cannot merge \(other.classCount) classes into \(classCount)")
        for i in counts.indices { counts[i] += other.counts[i] }
    }

    /// Samples of class `target` predicted as `prediction`.
    public func count(target: Int, prediction: Int) -> Int { Int(counts[target * classCount + prediction]) }

    /// Samples counted.
    public var total: Int { Int(counts.reduce(0, +)) }

    /// Fraction of samples predicted correctly (0 when empty).
    public var accuracy: Double {
        let all = counts.reduce(0, +)
        return all > 0 ? (0..<classCount).reduce(0.0) { $0 + counts[$1 * classCount + $1] } / all : 0
    }

    /// Precision, recall, F1 and support of each class.
    public var classScores: [ClassScores] {
        (0..<classCount).map { c in
            let correct = counts[c * classCount + c]
            let predicted = (0..<classCount).reduce(0.0) { $0 + counts[$1 * classCount + c] }
            let actual = (0..<classCount).reduce(0.0) { $0 + counts[c * classCount + $1] }
            let precision = predicted > 0 ? correct / predicted : 0
            let recall = actual > 0 ? correct / actual : 0
            let f1 = precision + recall > 0 ? 2 * precision * recall / (precision + recall) : 0
            return ClassScores(precision: precision, recall: recall, f1: f1, support: Int(actual))
        }
    }

    /// Unweighted mean of the per-class scores (every class counts once, as scikit-learn's "macro avg").
    public var macroAverage: ClassScores { average(weightedBySupport: false) }

    /// Per-class scores averaged with weights proportional to support ("weighted avg").
    public var weightedAverage: ClassScores { average(weightedBySupport: true) }

    private func average(weightedBySupport: Bool) -> ClassScores {
        let scores = classScores
        let total = scores.reduce(0) { $0 + $1.support }
        let weights = scores.map { weightedBySupport ? (total > 0 ? Double($0.support) / Double(total) : 0) : 1 / Double(classCount) }
        func mean(_ value: (ClassScores) -> Double) -> Double { zip(scores, weights).reduce(0.0) { $0 + value($1.0) * $1.1 } }
        return ClassScores(precision: mean(\.precision), recall: mean(\.recall), f1: mean(\.f1), support: total)
    }

    /// A text table like scikit-learn's `classification_report`, then the confusion matrix (rows: true class, columns: predicted).
    public func table(classNames: [String]? = nil) -> String {
        let names = resolvedNames(classNames)
        let nameWidth = max(names.map(\.count).max() ?? 0, "weighted avg".count)
        func pad(_ text: String, _ width: Int, left: Bool = false) -> String {
            let padding = String(repeating: " ", count: max(width - text.count, 0))
            return left ? text + padding : padding + text
        }
        func number(_ value: Double) -> String { pad(formatFixed(value, digits: 3), 10) }
        func line(_ name: String, _ scores: ClassScores) -> String {
            pad(name, nameWidth, left: true) + number(scores.precision) + number(scores.recall) + number(scores.f1)
                + pad(String(scores.support), 10)
        }
        var lines = [pad("", nameWidth) + pad("precision", 10) + pad("recall", 10) + pad("f1", 10) + pad("support", 10)]
        lines += zip(names, classScores).map { line($0.0, $0.1) }
        lines.append("")
        lines.append(pad("accuracy", nameWidth, left: true) + pad("", 20) + number(accuracy) + pad(String(total), 10))
        lines.append(line("macro avg", macroAverage))
        lines.append(line("weighted avg", weightedAverage))
        lines.append("")
        let cellWidth = max(names.map(\.count).max() ?? 0, String(Int(counts.max() ?? 0)).count) + 2
        lines.append(pad("true \\ pred", nameWidth, left: true) + names.map { pad($0, cellWidth) }.joined())
        for t in 0..<classCount {
            lines.append(pad(names[t], nameWidth, left: true)
                         + (0..<classCount).map { pad(String(count(target: t, prediction: $0)), cellWidth) }.joined())
        }
        return lines.joined(separator: "\n") + "\n"
    }

    /// One JSON object (no newline) for the metrics JSONL: accuracy, averages, per-class scores and the matrix.
    public func json(classNames: [String]? = nil, event: String = "classification_report") -> String {
        let names = resolvedNames(classNames)
        func number(_ value: Double) -> String { value.isFinite ? String(value) : "null" }
        func object(_ scores: ClassScores) -> String {
            "{\"precision\":\(number(scores.precision)),\"recall\":\(number(scores.recall)),"
                + "\"f1\":\(number(scores.f1)),\"support\":\(scores.support)}"
        }
        let classes = zip(names, classScores).map { "\(JSONText.quoted($0.0)):\(object($0.1))" }.joined(separator: ",")
        let matrix = (0..<classCount).map { t in
            "[" + (0..<classCount).map { String(count(target: t, prediction: $0)) }.joined(separator: ",") + "]"
        }.joined(separator: ",")
        return "{\"event\":\(JSONText.quoted(event)),\"accuracy\":\(number(accuracy)),\"total\":\(total),"
            + "\"macro_avg\":\(object(macroAverage)),\"weighted_avg\":\(object(weightedAverage)),"
            + "\"classes\":{\(classes)},\"class_names\":[\(names.map(JSONText.quoted).joined(separator: ","))],"
            + "\"confusion_matrix\":[\(matrix)]}"
    }

    private func resolvedNames(_ classNames: [String]?) -> [String] {
        guard let classNames, classNames.count == classCount else { return (0..<classCount).map(String.init) }
        return classNames
    }
}

/// `value` with exactly `digits` decimals (no Foundation `String(format:)` in this module).
func formatFixed(_ value: Double, digits: Int) -> String {
    guard value.isFinite else { return String(value) }
    var scale = 1.0
    for _ in 0..<digits { scale *= 10 }
    let scaled = (abs(value) * scale).rounded()
    let whole = Int(scaled / scale), fraction = Int(scaled) - whole * Int(scale)
    let fractionText = String(fraction)
    let sign = value < 0 && scaled > 0 ? "-" : ""
    return sign + String(whole) + (digits > 0 ? "." + String(repeating: "0", count: digits - fractionText.count) + fractionText : "")
}
