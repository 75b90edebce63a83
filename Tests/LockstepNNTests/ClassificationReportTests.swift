import Foundation
import XCTest
import LockstepNN

final class ClassificationReportTests: XCTestCase {
    /// Targets and one-hot-ish logits for the hand-computed example; predictions are the arg-max.
    ///   target 0 → predicted 0, 0, 1;  target 1 → 1, 1, 1, 2;  target 2 → 0, 0.
    private let targets: [Float] = [0, 0, 0, 1, 1, 1, 1, 2, 2]
    private let predictions = [0, 0, 1, 1, 1, 1, 2, 0, 0]

    private func logits(_ predictions: [Int]) -> [Float] {
        predictions.enumerated().flatMap { row, prediction in
            // Distinct non-winning values so the arg-max is the only thing that matters.
            (0..<3).map { $0 == prediction ? 2.5 : Float(-row) - Float($0) * 0.1 }
        }
    }

    private func report(rows: Range<Int>) -> ClassificationReport {
        var report = ClassificationReport(classCount: 3)
        let logits = logits(Array(predictions[rows])), targets = Array(targets[rows])
        report.add(logits: logits, targets: targets, batch: rows.count)
        return report
    }

    func testHandComputedScores() {
        let report = report(rows: 0..<9)
        // Confusion matrix (rows: target): [2 1 0] [0 3 1] [2 0 0].
        XCTAssertEqual(report.counts, [2, 1, 0, 0, 3, 1, 2, 0, 0])
        XCTAssertEqual(report.total, 9)
        XCTAssertEqual(report.accuracy, 5.0 / 9, accuracy: 1e-12)
        let scores = report.classScores
        // Class 0: 2 correct of 4 predicted, of 3 actual.
        XCTAssertEqual(scores[0].precision, 0.5, accuracy: 1e-12)
        XCTAssertEqual(scores[0].recall, 2.0 / 3, accuracy: 1e-12)
        XCTAssertEqual(scores[0].f1, 4.0 / 7, accuracy: 1e-12)
        XCTAssertEqual(scores[1], .init(precision: 0.75, recall: 0.75, f1: 0.75, support: 4))
        // Class 2 is predicted once, wrongly: every score 0, no division by zero.
        XCTAssertEqual(scores[2], .init(precision: 0, recall: 0, f1: 0, support: 2))
        let macro = report.macroAverage
        XCTAssertEqual(macro.precision, 1.25 / 3, accuracy: 1e-12)
        XCTAssertEqual(macro.recall, (2.0 / 3 + 0.75) / 3, accuracy: 1e-12)
        XCTAssertEqual(macro.f1, (4.0 / 7 + 0.75) / 3, accuracy: 1e-12)
        XCTAssertEqual(macro.support, 9)
        let weighted = report.weightedAverage
        XCTAssertEqual(weighted.precision, 0.5, accuracy: 1e-12)
        XCTAssertEqual(weighted.recall, 5.0 / 9, accuracy: 1e-12)
        XCTAssertEqual(weighted.f1, (3 * 4.0 / 7 + 3) / 9, accuracy: 1e-12)
    }

    func testRanksMergeBySummingRawCounts() {
        let whole = report(rows: 0..<9)
        // Two "ranks" each see part of the data; an allreduce sums their counts element-wise.
        let first = report(rows: 0..<4), second = report(rows: 4..<9)
        let summed = zip(first.counts, second.counts).map { $0 + $1 }
        XCTAssertEqual(ClassificationReport(classCount: 3, counts: summed), whole)
        var merged = first
        merged.merge(second)
        XCTAssertEqual(merged, whole)
    }

    func testBinaryLogits() {
        var report = ClassificationReport(classCount: 2)
        report.add(binaryLogits: [1.5, -0.2, 0.3, -4], targets: [1, 1, 0, 0], count: 4)
        XCTAssertEqual(report.counts, [1, 1, 1, 1])
    }

    func testTableAndJSON() throws {
        let report = report(rows: 0..<9)
        let table = report.table(classNames: ["cat", "dog", "bird"])
        XCTAssertTrue(table.contains("cat              0.500     0.667     0.571         3"), table)
        XCTAssertTrue(table.contains("accuracy                             0.556         9"), table)
        XCTAssertTrue(table.contains("macro avg        0.417     0.472     0.440         9"), table)
        XCTAssertTrue(table.contains("weighted avg     0.500     0.556     0.524         9"), table)
        XCTAssertTrue(table.hasSuffix("""
            true \\ pred    cat   dog  bird
            cat              2     1     0
            dog              0     3     1
            bird             2     0     0

            """), table)

        let json = report.json(classNames: ["cat", "dog", "say \"hi\""])
        XCTAssertFalse(json.contains("\n"))
        let object = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any])
        XCTAssertEqual(object["event"] as? String, "classification_report")
        XCTAssertEqual(object["accuracy"] as? Double ?? 0, 5.0 / 9, accuracy: 1e-12)
        XCTAssertEqual(object["confusion_matrix"] as? [[Int]], [[2, 1, 0], [0, 3, 1], [2, 0, 0]])
        let classes = try XCTUnwrap(object["classes"] as? [String: [String: Any]])
        XCTAssertEqual(classes["say \"hi\""]?["support"] as? Int, 2)
        XCTAssertEqual(classes["dog"]?["f1"] as? Double, 0.75)
        XCTAssertEqual((object["weighted_avg"] as? [String: Any])?["precision"] as? Double, 0.5)
        // Without names (or with the wrong number of them) classes are numbered.
        XCTAssertTrue(report.json().contains("\"class_names\":[\"0\",\"1\",\"2\"]"))
    }
}
